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
from collections.abc import Callable
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from tasks import audit
from tasks.audit import whoami
from tasks.card import model_card, model_card_html
from tasks.common import TRANSIENT_RETRIES
from tasks.drift import PROFILE_FILE
from tasks.validate import contract_origin
from trainpipe import storage
from trainpipe.errors import RegistryError
from trainpipe.provenance import code_version, dependency_set, package_versions
from trainpipe.spec import NAME_PATTERN, TrainSpec

__all__ = ["model_card", "whoami"]

CLAIM, COMMITTED, MANIFEST = "_CLAIM", "_COMMITTED", "manifest.json"
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


def publish_version(
    artifacts: str, name: str, files: dict[str, bytes], manifest: dict[str, Any],
    render_card: Optional[Callable[[dict[str, Any]], str]] = None,
    render_extra: Optional[Callable[[dict[str, Any]], dict[str, bytes]]] = None,
) -> tuple[int, str]:
    """Claim the next version number, write the files and manifest, commit, then log the publication;
    returns (version, uri). `render_card`/`render_extra` make files from the full manifest (the card)."""
    version = (claimed_versions(artifacts, name) or [0])[-1] + 1
    claim = storage.dumps_json({"claimed_at": now_iso(), "flow_run_id": manifest.get("prefect", {}).get("flow_run_id")})
    while not storage.create_only(storage.join(version_uri(artifacts, name, version), CLAIM), claim):
        version += 1
    folder = version_uri(artifacts, name, version)
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
    manifest_sha = storage.sha256_bytes(storage.dumps_json(full))
    storage.write_json(storage.join(folder, COMMITTED), {"committed_at": now_iso(), "manifest_sha256": manifest_sha})
    audit.append(artifacts, name, "version_published", {
        "version": version, "model_sha256": full.get("model_sha256"), "manifest_sha256": manifest_sha,
        "flow_run_id": full.get("prefect", {}).get("flow_run_id"),
        "trigger": (full.get("lineage") or {}).get("trigger")})
    return version, folder


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def build_manifest(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any], verdict: Optional[dict[str, Any]] = None, drift: Optional[dict[str, Any]] = None,
    trigger: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Everything a version must answer: data, code, parameters, run, trigger, results, gate verdict, drift."""
    spec_json = spec.model_dump(mode="json")
    return {
        "format": MANIFEST_FORMAT,
        "created_at": now_iso(),
        "created_by": whoami(),
        "task": validated["task"],
        "task_reason": validated["task_reason"],
        "target": spec.target,
        "classes": validated["classes"],
        "model_file": "model.ubj",
        "model_sha256": model["model_sha256"],
        "identity": {"model_sha256": model["model_sha256"], "data": sources["fingerprint"],
                     "transform": matrices["fingerprint"]},
        "data": {
            "fingerprint": sources["fingerprint"],
            "sources": sources["files"],
            "snapshot_uri": snapshot["uri"],
            "rows": parts["rows"],
            "split_method": parts["method"],
            "dropped_null_target": validated["dropped_null_target"],
        },
        "features": {"names": matrices["features"], "dropped": matrices["dropped"]},
        "spec": spec_json,
        "spec_sha256": storage.sha256_bytes(storage.dumps_json(spec_json)),
        "seed": spec.seed,
        "training": {k: model[k] for k in ("params", "rounds_trained", "best_iteration",
                                               "best_validation_score", "validation_metric",
                                               "refit_on_train_and_valid")},
        "tuning": model.get("tuning") or {"trials": spec.tuning.trials, "performed": False},
        "metrics": evaluation["metrics"],
        "baseline_metrics": evaluation["baseline_metrics"],
        "headline_metric": evaluation["headline_metric"],
        "importance_top": evaluation["importance"][:10],
        "code": code_version(),
        "packages": package_versions(),
        "prefect": {
            "flow_run_id": flow_run.id,
            "flow_run_name": flow_run.name,
            "deployment_id": deployment.id,
            "parameters_from": "deployment" if deployment.id else "direct call",
        },
        "stages": stages,
        "lineage": {"dependencies": dependency_set(), "trigger": trigger},
        "promotion": verdict,
        "drift": drift,
    }


def store_version(
    artifacts: str, name: str, manifest: dict[str, Any], evaluation: dict[str, Any],
    model_uri: str, transform_uri: str, contract_uri: str, report_uri: str,
    attachments: Optional[dict[str, str]] = None, profile: Optional[dict[str, Any]] = None,
    plots: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Publish a version unless an identical one exists; returns version, URI and whether it was reused.

    `attachments` ({filename: uri}, e.g. a tuning leaderboard) are copied into the version folder
    before the commit and hashed in the manifest like every other file.
    """
    existing = find_identical(artifacts, name, manifest["identity"])
    if existing is not None:
        return {"version": existing, "uri": version_uri(artifacts, name, existing), "reused": True}
    files = {
        "model.ubj": storage.read_bytes(model_uri),
        "transform.json": storage.read_bytes(transform_uri),
        "contract.json": storage.read_bytes(contract_uri),
        "validation_report.json": storage.read_bytes(report_uri),
        "metrics.json": storage.dumps_json({k: evaluation[k] for k in ("metrics", "baseline_metrics",
                                                                         "headline_metric", "test_rows")}),
        "feature_importance.json": storage.dumps_json(evaluation["importance"]),
    }
    if profile is not None:
        files[PROFILE_FILE] = storage.dumps_json(profile)
    for filename, uri in sorted((attachments or {}).items()):
        if "/" in filename or filename in files or filename.startswith("_") or filename in (MANIFEST, CLAIM):
            raise RegistryError(f"attachment name {filename!r} is not a plain, unused file name")
        files[filename] = storage.read_bytes(uri)
    manifest = {**manifest, "attachments": sorted(attachments or {})}
    version, folder = publish_version(
        artifacts, name, files, manifest, render_card=model_card,
        render_extra=lambda full: {"model_card.html": model_card_html(full, plots).encode()})
    return {"version": version, "uri": folder, "reused": False}


@task(name="store", **TRANSIENT_RETRIES)
def store_task(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any], verdict: Optional[dict[str, Any]] = None, drift: Optional[dict[str, Any]] = None,
    plots: Optional[dict[str, Any]] = None, trigger: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    artifacts = storage.normalize_root(spec.artifacts)
    manifest = build_manifest(spec, sources, snapshot, validated, parts, matrices, model, evaluation, stages,
                              verdict=verdict, drift=(drift or {}).get("drift"), trigger=trigger)
    result = store_version(artifacts, spec.name, manifest, evaluation, model["model_uri"],
                           matrices["transform_uri"], validated["contract_uri"], validated["report_uri"],
                           attachments=model.get("attachments"), profile=(drift or {}).get("profile"), plots=plots)
    card = storage.read_bytes(storage.join(result["uri"], "model_card.md")).decode()
    create_markdown_artifact(key="model-summary", markdown=card, description=f"{spec.name} v{result['version']}")
    return {**result, "seconds": round(time.perf_counter() - started, 3)}


@task(name="find-contract", **TRANSIENT_RETRIES)
def contract_ref_task(
    artifacts: str, name: str, snapshot: dict[str, Any], target: str, task_type: Optional[str],
    id_columns: list[str], drop_columns: list[str],
) -> Optional[dict[str, Any]]:
    """Never cached: a newly published version must be seen by the next run."""
    origin = contract_origin(snapshot["fingerprint"], target, task_type, id_columns, drop_columns)
    return latest_contract_ref(artifacts, name, origin)


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
