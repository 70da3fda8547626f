"""Registry: immutable model versions in the artifact store, published atomically.

Layout: `<artifacts>/models/<name>/versions/<n>/` holds the model (UBJSON), its fitted
transform, data contract, metrics, validation report, feature importance, model card and
manifest. A version number is claimed with a create-only write of `_CLAIM`; the files are
written next; `_COMMITTED` is written last. Readers list only committed versions, so a run
that dies half-way leaves nothing visible, and two runs never get the same number.

After the commit, a `version_published` record goes to the model's audit log
(`tasks/audit.py`), which also holds the gate verdicts and every alias move: the
champion and the other aliases are read from it, and moved on it by compare-and-swap.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Optional

from trainpipe import audit, storage
from trainpipe.audit import whoami
from trainpipe.errors import RegistryError
from trainpipe.provenance import now_iso
from trainpipe.spec import NAME_PATTERN

CLAIM, COMMITTED, MANIFEST = "_CLAIM", "_COMMITTED", "manifest.json"
ABANDONED = "_ABANDONED"  # a claim its run gave up (an identical rival won, or writing failed): never committed
RIVAL_WAIT_S = 60.0  # how long an identical rival's uncommitted claim is waited for before it counts as dead
PROFILE_FILE = "data_profile.json"  # the training-data profile drift compares against
MANIFEST_FORMAT = 1


def models_root(artifacts: str) -> str:
    return storage.join(artifacts, "models")


def version_uri(artifacts: str, name: str, version: int) -> str:
    return storage.join(models_root(artifacts), name, "versions", str(version))


def _numbers(names: list[str]) -> list[int]:
    return sorted(int(n) for n in names if n.isdigit())


def claimed_versions(artifacts: str, name: str) -> list[int]:
    """Every version number ever claimed, committed or not."""
    return _numbers(storage.list_dir(storage.join(models_root(artifacts), name, "versions")))


def list_versions(artifacts: str, name: str) -> list[int]:
    """Committed versions of a model, oldest first."""
    return [v for v in claimed_versions(artifacts, name)
            if storage.exists(storage.join(version_uri(artifacts, name, v), COMMITTED))]


def list_models(artifacts: str) -> list[str]:
    """Names with at least one committed version."""
    names = storage.list_dir(models_root(artifacts))
    return [n for n in names if re.match(NAME_PATTERN, n) and list_versions(artifacts, n)]


def model_summaries(artifacts: str) -> list[dict[str, Any]]:
    """Per model: version count, latest version, task, latest headline metric, champion."""
    rows = []
    for name in list_models(artifacts):
        versions = list_versions(artifacts, name)
        manifest = read_manifest(artifacts, name, versions[-1])
        metric = manifest["headline_metric"]
        rows.append({"model": name, "versions": len(versions), "latest": versions[-1], "task": manifest["task"],
                     "metric": metric, "value": manifest["metrics"][metric], "created_at": manifest["created_at"],
                     "champion": champion(artifacts, name)})
    return rows


def parse_ref(ref: str) -> tuple[str, Optional[int]]:
    """NAME or NAME:VERSION."""
    name, _, version = ref.partition(":")
    if not re.match(NAME_PATTERN, name) or (version and not version.isdigit()):
        raise RegistryError(f"bad model reference {ref!r}: expected NAME or NAME:VERSION (a number)")
    return name, int(version) if version else None


def resolve_version(artifacts: str, ref: str) -> tuple[str, int]:
    """The (name, version) a reference means: the latest committed one when no version is given."""
    name, version = parse_ref(ref)
    versions = list_versions(artifacts, name)
    if not versions:
        raise RegistryError(f"no model named {name!r} in {models_root(artifacts)}")
    if version is None:
        return name, versions[-1]
    if version not in versions:
        raise RegistryError(f"model {name!r} has no version {version}; versions: {', '.join(map(str, versions))}")
    return name, version


def read_manifest(artifacts: str, name: str, version: int) -> dict[str, Any]:
    return storage.read_json(storage.join(version_uri(artifacts, name, version), MANIFEST))


def latest_contract_ref(artifacts: str, name: str, origin: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The data contract of the latest version, as URI and fingerprint.

    None for a new name, and None too when that contract was inferred from exactly this
    `origin` (same data, same fields): inferring again gives the same contract.
    """
    versions = list_versions(artifacts, name)
    if not versions:
        return None
    uri = storage.join(version_uri(artifacts, name, versions[-1]), "contract.json")
    data = storage.read_bytes(uri)
    if origin is not None and json.loads(data).get("origin") == origin:
        return None
    return {"uri": uri, "fingerprint": storage.sha256_bytes(data), "version": versions[-1]}


def find_identical(artifacts: str, name: str, identity: dict[str, str]) -> Optional[int]:
    """A committed version with the same model bytes, data and transform, newest first."""
    for version in reversed(list_versions(artifacts, name)):
        if read_manifest(artifacts, name, version).get("identity") == identity:
            return version
    return None


def identity_sha256(identity: Any) -> str:
    return storage.sha256_bytes(storage.dumps_json(identity))


def publish_version(
    artifacts: str, name: str, files: dict[str, bytes], manifest: dict[str, Any],
    render_card: Optional[Callable[[dict[str, Any]], str]] = None,
    render_extra: Optional[Callable[[dict[str, Any]], dict[str, bytes]]] = None,
) -> tuple[int, str]:
    """Claim the next version number, write the files and manifest, commit, then log the publication;
    returns (version, uri). `render_card`/`render_extra` make files from the full manifest (the card).
    An identical version (same `identity`) that another run claimed first is returned instead."""
    version, folder, _ = publish_or_join(artifacts, name, files, manifest, render_card, render_extra)
    return version, folder


def publish_or_join(
    artifacts: str, name: str, files: dict[str, bytes], manifest: dict[str, Any],
    render_card: Optional[Callable[[dict[str, Any]], str]] = None,
    render_extra: Optional[Callable[[dict[str, Any]], dict[str, bytes]]] = None,
    rival_wait_s: float = RIVAL_WAIT_S,
) -> tuple[int, str, bool]:
    """`publish_version`, also saying whether the version is one an identical rival published (joined).

    The claim carries the identity's hash. Two identical runs that both found no identical version claim
    two numbers; the one holding the higher number sees the lower claim, waits for it to commit (at most
    until that claim is `rival_wait_s` old: a run killed before its commit never does) and returns it,
    marking its own claim abandoned. So identical runs at the same moment share one version.
    """
    version = (claimed_versions(artifacts, name) or [0])[-1] + 1
    run_id = manifest.get("prefect", {}).get("flow_run_id")
    key = identity_sha256(manifest["identity"]) if manifest.get("identity") is not None else None
    # The nonce makes every claim's bytes unique: create_only tells a retried PUT of its own claim from a rival's.
    claim = storage.dumps_json({"claimed_at": now_iso(), "flow_run_id": run_id, "identity_sha256": key,
                                "nonce": uuid.uuid4().hex})
    while not _claim(storage.join(version_uri(artifacts, name, version), CLAIM), claim):
        version += 1
    folder = version_uri(artifacts, name, version)
    try:
        rival = None if key is None else identical_rival(artifacts, name, version, key, run_id, rival_wait_s)
        if rival is not None:
            _abandon(folder, f"identical to v{rival}, claimed first by another run")
            return rival, version_uri(artifacts, name, rival), True
        hashes = {}
        for filename, data in sorted(files.items()):
            storage.write_bytes(storage.join(folder, filename), data)
            hashes[filename] = storage.sha256_bytes(data)
        full = {**manifest, "model": name, "version": version, "uri": folder, "files": hashes}
        if render_card is not None:
            storage.write_bytes(storage.join(folder, "model_card.md"), render_card(full).encode())
        for filename, data in (render_extra(full) if render_extra is not None else {}).items():
            storage.write_bytes(storage.join(folder, filename), data)
        storage.write_json(storage.join(folder, MANIFEST), full)
        if storage.read_bytes(storage.join(folder, CLAIM)) != claim:
            raise ClaimLost(f"the claim of {name} v{version} ({folder}) was overwritten by another writer: the "
                            "store does not enforce create-only writes (If-None-Match); nothing was committed")
        manifest_sha = storage.sha256_bytes(storage.dumps_json(full))
        storage.write_json(storage.join(folder, COMMITTED), {"committed_at": now_iso(),
                                                             "manifest_sha256": manifest_sha})
    except ClaimLost:
        raise  # the folder is the other writer's now: nothing of ours to mark
    except Exception as error:
        if not _committed_anyway(folder):
            _abandon(folder, f"{type(error).__name__}: {error}")
        raise
    record_publication(artifacts, name, version, full, manifest_sha)
    return version, folder, False


class ClaimLost(RegistryError):
    """This writer's version claim was overwritten by another's: the store let both create it."""


def _claim(uri: str, claim: bytes) -> bool:
    """Create a version's claim; True only when it is this writer's. A store that checks the create-only condition
    and writes in two steps (moto's server under concurrent PUTs; some S3-compatible stores) can let two
    writers both succeed, the later one overwriting: reading the claim back tells the earlier one it lost."""
    return storage.create_only(uri, claim) and storage.read_bytes(uri) == claim


def _committed_anyway(folder: str) -> bool:
    """Whether a claim whose writing failed is committed all the same (the commit marker's PUT landed but its
    answer was lost): then it must not be marked abandoned, and the retried store finds and completes it. When
    the store cannot say, it counts as committed: a claim left unmarked only makes an identical rival wait."""
    try:
        return storage.exists(storage.join(folder, COMMITTED))
    except Exception:  # noqa: BLE001 - the store may be what failed
        return True


def _abandon(folder: str, why: str) -> None:
    """Best effort: tell identical rivals waiting on this claim that it will never commit."""
    try:
        storage.write_json(storage.join(folder, ABANDONED), {"at": now_iso(), "why": why[:500]})
    except Exception:  # noqa: BLE001, S110 - the store may be what failed; the rival then waits out RIVAL_WAIT_S
        pass


def _read_claim(folder: str) -> Optional[dict[str, Any]]:
    """A claim's content; a number whose folder is listed but whose claim is not yet readable (its create is in
    flight) is read again for up to about 2 s."""
    for _ in range(10):
        try:
            return storage.read_json(storage.join(folder, CLAIM))
        except FileNotFoundError:
            time.sleep(0.2)
    return None


def identical_rival(artifacts: str, name: str, mine: int, key: str, run_id: Optional[str],
                    wait_s: float) -> Optional[int]:
    """The nearest lower-numbered claim of the same identity that commits (waited for while it is younger
    than `wait_s` and not abandoned); None when there is none. Claims of this same flow run (a retried
    store) are its own and skipped."""
    for version in reversed([v for v in claimed_versions(artifacts, name) if v < mine]):
        folder = version_uri(artifacts, name, version)
        claim = _read_claim(folder)
        if claim is None or claim.get("identity_sha256") != key:
            continue
        if run_id is not None and claim.get("flow_run_id") == run_id:
            continue
        claimed = dt.datetime.fromisoformat(claim["claimed_at"])
        while True:
            if storage.exists(storage.join(folder, COMMITTED)):
                return version
            age = (dt.datetime.now(dt.UTC) - claimed).total_seconds()
            if storage.exists(storage.join(folder, ABANDONED)) or age > wait_s:
                break
            time.sleep(0.5)
    return None


def record_publication(artifacts: str, name: str, version: int, manifest: dict[str, Any],
                       manifest_sha: str, written: bool = False) -> Any:
    """The audit log's `version_published` record of a committed version (`written`: whether this call
    wrote it rather than the record itself)."""
    record, wrote = audit.append_once(artifacts, name, "version_published", {
        "version": version, "model_sha256": manifest.get("model_sha256"), "manifest_sha256": manifest_sha,
        "flow_run_id": manifest.get("prefect", {}).get("flow_run_id"),
        "trigger": (manifest.get("lineage") or {}).get("trigger")},
        same=lambda r: r.get("version") == version)  # once, also when a repairing run meets the publisher
    return wrote if written else record


def version_records(artifacts: str, name: str, version: int) -> dict[str, list[dict[str, Any]]]:
    """The audit records about one version, by event."""
    found: dict[str, list[dict[str, Any]]] = {event: [] for event in audit.EVENTS}
    for record in audit.read_log(artifacts, name):
        if record.get("version") == version and record.get("event") in found:
            found[record["event"]].append(record)
    return found


def complete_publication(artifacts: str, name: str, version: int) -> tuple[list[str], bool]:
    """Make an existing committed version whole: append its `version_published` record when a run died
    between the commit and the record (publishing is idempotent). Returns (what was appended, whether the
    version already has a gate verdict)."""
    records = version_records(artifacts, name, version)
    repaired = []
    if not records["version_published"]:
        manifest = read_manifest(artifacts, name, version)
        if record_publication(artifacts, name, version, manifest,
                              storage.sha256_bytes(storage.dumps_json(manifest)), written=True):
            repaired.append("version_published")  # else its publisher logged it meanwhile
    return repaired, bool(records["gate_verdict"])



# --- aliases, manual control, verification ------------------------------------------------------

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


def aliases(artifacts: str, name: str) -> dict[str, int]:
    """Alias -> version (`champion` among them when there is one), from the audit log."""
    return audit.current_aliases(audit.read_log(artifacts, name))


def champion(artifacts: str, name: str) -> Optional[int]:
    return aliases(artifacts, name).get(audit.CHAMPION)


def alias_history(artifacts: str, name: str, alias: Optional[str] = None) -> list[dict[str, Any]]:
    """Every move of an alias (of every alias when None), oldest first."""
    return audit.alias_moves(audit.read_log(artifacts, name), alias)


def set_alias(artifacts: str, ref: str, alias: str, reason: str, by: Optional[str] = None) -> dict[str, Any]:
    """Point `alias` (`champion` included: a manual promotion) at NAME:VERSION, recording who and why."""
    if not re.match(ALIAS_PATTERN, alias):
        raise RegistryError(f"bad alias {alias!r}: lowercase letters, digits, '-' and '_', starting with a letter")
    if not reason.strip():
        raise RegistryError("a reason is required (--reason TEXT)")
    name, version = parse_ref(ref)
    if version is None:
        raise RegistryError(f"name the version to point {alias!r} at: {name}:VERSION")
    resolve_version(artifacts, ref)
    kind = "manual_promote" if alias == audit.CHAMPION else "manual"

    def decide(current: Optional[int], records: list[dict[str, Any]]) -> tuple[Optional[int], dict[str, Any]]:
        if current == version:
            return None, {"reason": f"{alias} is already v{version}"}
        return version, {"reason": reason}

    move, evidence = audit.move_alias_if(artifacts, name, alias, decide,
                                         {"kind": kind, "reason": reason, "by": by or whoami()})
    return {"model": name, "alias": alias, "version": version, "moved": move is not None,
            "from_version": move["from_version"] if move else version, "reason": evidence["reason"],
            "audit_seq": move["seq"] if move else None}


def rollback(artifacts: str, name: str, reason: str, by: Optional[str] = None) -> dict[str, Any]:
    """Give `champion` back to the version it held before the current one (promotions push, rollbacks pop)."""
    parse_ref(name)
    if not reason.strip():
        raise RegistryError("a reason is required (--reason TEXT)")
    outcome: dict[str, Any] = {}

    def decide(current: Optional[int], records: list[dict[str, Any]]) -> tuple[Optional[int], dict[str, Any]]:
        stack = audit.champion_stack(records)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        if len(stack) < 2:
            raise RegistryError(f"champion v{current} of {name!r} has no earlier champion to roll back to")
        outcome["from"] = current
        return stack[-2], {"reason": reason}

    move, _ = audit.move_alias_if(artifacts, name, audit.CHAMPION, decide,
                                  {"kind": "rollback", "reason": reason, "by": by or whoami()})
    assert move is not None
    return {"model": name, "alias": audit.CHAMPION, "version": move["version"], "from_version": outcome["from"],
            "reason": reason, "audit_seq": move["seq"], "moved": True}


def verify_registry(artifacts: str, name: str) -> list[str]:
    """Problems in the audit log's chain, and disagreements between the log and the committed versions."""
    problems = audit.verify_log(artifacts, name)
    records = audit.read_log(artifacts, name)
    committed = set(list_versions(artifacts, name))
    published: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("event") == "version_published":
            published[record["version"]] = record
    for version in sorted(committed - set(published)):
        problems.append(f"version {version} is committed but the audit log has no record of its publication")
    for version in sorted(set(published) - committed):
        problems.append(f"the audit log records version {version} as published, but it is not committed")
    for version in sorted(committed & set(published)):
        manifest = storage.dumps_json(read_manifest(artifacts, name, version))
        if storage.sha256_bytes(manifest) != published[version]["manifest_sha256"]:
            problems.append(f"the manifest of version {version} differs from the one recorded at publication")
    for move in audit.alias_moves(records):
        if move.get("version") is not None and move["version"] not in committed:
            problems.append(f"alias record {move.get('seq')} points {move['alias']!r} at uncommitted "
                            f"version {move['version']}")
    return problems
