"""tasks.registry: version numbers, commit markers, identical-version lookup, references."""

from __future__ import annotations

import hashlib
import json

import pytest

from trainpipe import registry, storage
from trainpipe.errors import RegistryError
from trainpipe.registry import (
    CLAIM,
    COMMITTED,
    MANIFEST,
    claimed_versions,
    find_identical,
    latest_contract_ref,
    list_models,
    list_versions,
    parse_ref,
    publish_version,
    read_manifest,
    resolve_version,
    version_uri,
)


def publish(root: str, name: str = "churn", model: bytes = b"model-1", identity: str = "1", **extra):
    files = {"model.ubj": model, "contract.json": storage.dumps_json({"origin": f"o{identity}"})}
    return publish_version(root, name, files, {"identity": {"model_sha256": identity}, **extra})


def test_two_publishes_get_versions_1_and_2(tmp_path):
    root = str(tmp_path)
    assert publish(root, identity="a") == (1, version_uri(root, "churn", 1))
    assert publish(root, model=b"model-2", identity="b") == (2, version_uri(root, "churn", 2))
    assert list_versions(root, "churn") == [1, 2]
    assert resolve_version(root, "churn") == ("churn", 2)


def test_published_version_holds_files_manifest_and_markers(tmp_path):
    root = str(tmp_path)
    version, folder = publish_version(root, "churn", {"model.ubj": b"abc"}, {"identity": {"k": "v"}, "task": "binary"},
                                      render_card=lambda m: f"# {m['model']} v{m['version']}")
    assert folder == f"{root}/models/churn/versions/1"
    names = set(storage.list_dir(folder))
    assert {CLAIM, COMMITTED, MANIFEST, "model.ubj", "model_card.md"} <= names
    assert storage.read_bytes(storage.join(folder, "model.ubj")) == b"abc"
    assert storage.read_bytes(storage.join(folder, "model_card.md")).decode() == "# churn v1"
    manifest = read_manifest(root, "churn", 1)
    assert manifest["files"] == {"model.ubj": hashlib.sha256(b"abc").hexdigest()}
    assert (manifest["model"], manifest["version"], manifest["uri"], manifest["task"]) == ("churn", 1, folder, "binary")
    committed = storage.read_json(storage.join(folder, COMMITTED))
    assert committed["manifest_sha256"] == storage.sha256_bytes(storage.dumps_json(manifest))


def test_uncommitted_version_is_invisible_and_its_number_is_skipped(tmp_path):
    root = str(tmp_path)
    publish(root, identity="a")
    # a run that died after claiming version 2 and writing some files
    assert storage.create_only(storage.join(version_uri(root, "churn", 2), CLAIM), b"{}")
    storage.write_bytes(storage.join(version_uri(root, "churn", 2), "model.ubj"), b"half")
    storage.write_json(storage.join(version_uri(root, "churn", 2), MANIFEST), {"identity": {"model_sha256": "b"}})

    assert claimed_versions(root, "churn") == [1, 2]
    assert list_versions(root, "churn") == [1]
    assert resolve_version(root, "churn") == ("churn", 1)
    assert find_identical(root, "churn", {"model_sha256": "b"}) is None
    with pytest.raises(RegistryError, match="has no version 2; versions: 1"):
        resolve_version(root, "churn:2")

    assert publish(root, identity="c")[0] == 3
    assert list_versions(root, "churn") == [1, 3]
    assert storage.read_bytes(storage.join(version_uri(root, "churn", 2), "model.ubj")) == b"half"


def test_publish_skips_a_number_claimed_after_its_listing(tmp_path, monkeypatch):
    import trainpipe.registry as registry

    root = str(tmp_path)
    publish(root, identity="a")
    # another run claims 2 between this run's listing (which still says [1]) and its claim
    assert storage.create_only(storage.join(version_uri(root, "churn", 2), CLAIM), b"other run")
    monkeypatch.setattr(registry, "claimed_versions", lambda artifacts, name: [1])
    assert publish(root, identity="b")[0] == 3
    assert storage.read_bytes(storage.join(version_uri(root, "churn", 2), CLAIM)) == b"other run"


def test_find_identical(tmp_path):
    root = str(tmp_path)
    publish(root, identity="a")
    publish(root, model=b"model-2", identity="b")
    # a third publication with the identity of v1 joins v1 instead of publishing a duplicate
    assert publish(root, model=b"model-3", identity="a") == (1, version_uri(root, "churn", 1))
    assert registry.list_versions(root, "churn") == [1, 2]
    assert registry.claimed_versions(root, "churn") == [1, 2, 3]  # its own claim stays, abandoned
    assert storage.exists(storage.join(version_uri(root, "churn", 3), registry.ABANDONED))
    assert find_identical(root, "churn", {"model_sha256": "a"}) == 1
    assert find_identical(root, "churn", {"model_sha256": "b"}) == 2
    assert find_identical(root, "churn", {"model_sha256": "zzz"}) is None
    assert find_identical(root, "other", {"model_sha256": "a"}) is None


def test_names_have_separate_histories(tmp_path):
    root = str(tmp_path)
    publish(root, name="churn")
    publish(root, name="churn", identity="2")
    assert publish(root, name="fraud")[0] == 1
    storage.create_only(storage.join(version_uri(root, "ghost", 1), CLAIM), b"{}")
    assert list_models(root) == ["churn", "fraud"]


def test_resolve_version_explicit_and_errors(tmp_path):
    root = str(tmp_path)
    publish(root)
    publish(root, identity="2")
    assert resolve_version(root, "churn:1") == ("churn", 1)
    with pytest.raises(RegistryError, match="model 'churn' has no version 9; versions: 1, 2"):
        resolve_version(root, "churn:9")
    with pytest.raises(RegistryError, match="no model named 'fraud'"):
        resolve_version(root, "fraud")


@pytest.mark.parametrize(("ref", "parsed"), [("churn", ("churn", None)), ("churn:12", ("churn", 12)),
                                            ("a.b-c_d:1", ("a.b-c_d", 1))])
def test_parse_ref(ref, parsed):
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["bad name", "churn:x", ":1", "churn:-1", "", "../etc"])
def test_parse_ref_rejects_bad_references(ref):
    with pytest.raises(RegistryError, match="bad model reference"):
        parse_ref(ref)


def test_latest_contract_ref(tmp_path):
    root = str(tmp_path)
    assert latest_contract_ref(root, "churn") is None
    publish(root, identity="1")
    publish(root, identity="2")
    ref = latest_contract_ref(root, "churn")
    assert ref["version"] == 2
    assert ref["uri"] == storage.join(version_uri(root, "churn", 2), "contract.json")
    assert ref["fingerprint"] == storage.sha256_uri(ref["uri"])
    assert json.loads(storage.read_bytes(ref["uri"]))["origin"] == "o2"
    # a contract inferred from exactly this origin is not handed back
    assert latest_contract_ref(root, "churn", origin="o2") is None
    assert latest_contract_ref(root, "churn", origin="o1") is not None


def test_publish_logs_the_version_and_aliases_move_with_history(tmp_path):
    from trainpipe.registry import alias_history, aliases, champion, rollback, set_alias, verify_registry

    root = str(tmp_path)
    for identity in ("a", "b", "c"):
        publish(root, identity=identity)
    assert champion(root, "churn") is None
    set_alias(root, "churn:1", "champion", "first", by="ann")
    set_alias(root, "churn:3", "champion", "better", by="ann")
    set_alias(root, "churn:2", "shadow", "compare", by="bob")
    unchanged = set_alias(root, "churn:2", "shadow", "again", by="bob")

    assert not unchanged["moved"]
    assert aliases(root, "churn") == {"champion": 3, "shadow": 2}
    back = rollback(root, "churn", "3 misbehaves", by="cy")
    assert (back["from_version"], back["version"]) == (3, 1)
    assert [(m["alias"], m["version"], m["by"]) for m in alias_history(root, "churn")] == [
        ("champion", 1, "ann"), ("champion", 3, "ann"), ("shadow", 2, "bob"), ("champion", 1, "cy")]
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback(root, "churn", "again")
    assert verify_registry(root, "churn") == []


@pytest.mark.parametrize(("ref", "alias", "reason", "message"), [
    ("churn", "champion", "r", "name the version"),
    ("churn:9", "champion", "r", "no version 9"),
    ("churn:1", "Bad Alias", "r", "bad alias"),
    ("churn:1", "champion", " ", "reason is required"),
])
def test_set_alias_rejects_bad_requests(tmp_path, ref, alias, reason, message):
    from trainpipe.registry import set_alias

    publish(str(tmp_path))
    with pytest.raises(RegistryError, match=message):
        set_alias(str(tmp_path), ref, alias, reason)


def test_verify_registry_notices_a_version_missing_from_the_log(tmp_path):
    from trainpipe import audit
    from trainpipe.registry import verify_registry

    root = str(tmp_path)
    publish(root, identity="a")
    storage.write_bytes(storage.join(version_uri(root, "churn", 2), CLAIM), b"{}")
    storage.write_json(storage.join(version_uri(root, "churn", 2), MANIFEST), {"identity": {}})
    storage.write_json(storage.join(version_uri(root, "churn", 2), COMMITTED), {})  # committed behind the log
    audit.append(root, "churn", "alias_moved", {"alias": "champion", "version": 5, "from_version": None})

    problems = verify_registry(root, "churn")
    assert any("version 2 is committed but the audit log has no record" in p for p in problems)
    assert any("uncommitted version 5" in p for p in problems)


def _rival_claim(root: str, identity: str, claimed_at: str, flow_run_id: str = "rival-run") -> str:
    """Version 1 claimed by another run publishing `identity`, not (yet) committed."""
    folder = version_uri(root, "churn", 1)
    key = registry.identity_sha256({"model_sha256": identity})
    storage.write_json(storage.join(folder, registry.CLAIM),
                       {"claimed_at": claimed_at, "flow_run_id": flow_run_id, "identity_sha256": key, "nonce": "n"})
    return folder


def test_an_identical_rival_that_claimed_first_is_waited_for_and_joined(tmp_path):
    import threading

    from trainpipe.provenance import now_iso

    root = str(tmp_path)
    folder = _rival_claim(root, "a", now_iso())
    timer = threading.Timer(1.0, lambda: storage.write_json(storage.join(folder, registry.COMMITTED), {}))
    timer.start()
    try:
        joined = registry.publish_or_join(root, "churn", {"model.ubj": b"m"},
                                          {"identity": {"model_sha256": "a"}, "prefect": {"flow_run_id": "me"}})
    finally:
        timer.join()
    assert joined == (1, folder, True)
    assert registry.claimed_versions(root, "churn") == [1, 2]
    assert storage.exists(storage.join(version_uri(root, "churn", 2), registry.ABANDONED))
    assert not storage.exists(storage.join(version_uri(root, "churn", 2), registry.COMMITTED))


@pytest.mark.parametrize("rival", ["abandoned", "stale", "same_run", "other_identity"])
def test_a_rival_that_will_not_commit_is_not_waited_for(tmp_path, rival, monkeypatch):
    from trainpipe.provenance import now_iso

    def no_wait(seconds: float) -> None:
        raise AssertionError("waited for a rival that will never commit")

    root = str(tmp_path)
    claimed_at = "2020-01-01T00:00:00+00:00" if rival == "stale" else now_iso()
    folder = _rival_claim(root, "b" if rival == "other_identity" else "a", claimed_at,
                          flow_run_id="me" if rival == "same_run" else "rival-run")
    if rival == "abandoned":
        storage.write_json(storage.join(folder, registry.ABANDONED), {"why": "failed"})
    monkeypatch.setattr(registry.time, "sleep", no_wait)
    out = registry.publish_or_join(root, "churn", {"model.ubj": b"m"},
                                   {"identity": {"model_sha256": "a"}, "prefect": {"flow_run_id": "me"}})
    assert out == (2, version_uri(root, "churn", 2), False)
    assert registry.list_versions(root, "churn") == [2]


def test_a_publication_record_is_written_once_when_a_repair_meets_its_publisher(tmp_path):
    root = str(tmp_path)
    version, _ = publish(root, identity="a")
    manifest = registry.read_manifest(root, "churn", version)
    sha = storage.sha256_bytes(storage.dumps_json(manifest))
    assert registry.record_publication(root, "churn", version, manifest, sha, written=True) is False
    assert registry.complete_publication(root, "churn", version) == ([], False)
    events = [r["event"] for r in registry.audit.read_log(root, "churn")]
    assert events == ["version_published"]


def test_a_claim_another_writer_overwrote_is_given_up_before_and_refused_at_the_commit(tmp_path, monkeypatch):
    """A store that lets two writers both create one claim (the later overwriting; moto's server under concurrent
    PUTs checks and writes in two steps): the writer that reads back another's claim takes the next number, and
    one that finds its claim overwritten only later commits nothing and marks nothing in the other's folder."""
    root = str(tmp_path)
    real_create = storage.create_only

    def overwritten_at_once(uri: str, data: bytes) -> bool:  # both creates "succeed"; the rival's bytes land last
        created = real_create(uri, data)
        if created and uri.endswith("/1/_CLAIM"):
            storage.write_bytes(uri, b'{"rival": true}')
        return created

    monkeypatch.setattr(storage, "create_only", overwritten_at_once)
    version, _ = registry.publish_version(root, "churn", {"model.ubj": b"m"}, {"identity": {"model_sha256": "a"}})
    assert version == 2 and registry.list_versions(root, "churn") == [2]
    monkeypatch.setattr(storage, "create_only", real_create)

    real_write = storage.write_json

    def overwrite_before_commit(uri: str, value) -> str:
        if uri.endswith("/3/manifest.json"):
            storage.write_bytes(storage.join(version_uri(root, "churn", 3), registry.CLAIM), b'{"rival": true}')
        return real_write(uri, value)

    monkeypatch.setattr(storage, "write_json", overwrite_before_commit)
    with pytest.raises(registry.ClaimLost, match="churn v3 .* overwritten by another writer"):
        registry.publish_version(root, "churn", {"model.ubj": b"n"}, {"identity": {"model_sha256": "b"}})
    third = version_uri(root, "churn", 3)
    assert not storage.exists(storage.join(third, registry.COMMITTED))
    assert not storage.exists(storage.join(third, registry.ABANDONED))
    assert registry.list_versions(root, "churn") == [2]
    assert [r["version"] for r in registry.audit.read_log(root, "churn")] == [2]
