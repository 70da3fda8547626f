"""The registry and its audit log on both backends: the local filesystem and S3 (moto's server over HTTP).

Several OS processes publish and promote at once; a process killed before its commit; tampering.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from moto_s3 import moto_s3

from trainpipe import audit, registry, storage

WORKER = Path(__file__).with_name("registry_worker.py")
BUCKET = "trainpipe-registry"
PROCESSES, ROUNDS = 4, 2


@pytest.fixture(scope="module")
def moto_endpoint():
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def artifacts(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("moto_endpoint")
    return f"s3://{BUCKET}/{tmp_path.name}"


def worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))


def test_concurrent_publish_and_promote_lose_nothing_and_keep_one_champion(artifacts: str, tmp_path: Path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [worker("race", artifacts, "race", str(w), str(ROUNDS), str(barrier), str(PROCESSES))
             for w in range(PROCESSES)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]

    versions = registry.list_versions(artifacts, "race")
    assert versions == list(range(1, PROCESSES * ROUNDS + 1))  # no number lost or given twice
    scores = {v: registry.read_manifest(artifacts, "race", v)["score"] for v in versions}
    assert len({(m["worker"], m["round"]) for m in
                (registry.read_manifest(artifacts, "race", v)["identity"] for v in versions)}) == len(versions)

    records = audit.read_log(artifacts, "race")
    assert registry.verify_registry(artifacts, "race") == []
    published = [r["version"] for r in records if r["event"] == "version_published"]
    assert sorted(published) == versions  # every publication logged exactly once
    moves = audit.alias_moves(records, audit.CHAMPION)
    # each move starts where the previous one ended (no update lost or made on a stale view) ...
    assert [m["from_version"] for m in moves] == [None] + [m["version"] for m in moves[:-1]]
    # ... and each one raised the champion's score, ending at the best version of all
    assert all(scores[b["version"]] > scores[a["version"]] for a, b in zip(moves, moves[1:], strict=False))
    assert registry.champion(artifacts, "race") == max(versions, key=scores.get)
    assert list(registry.aliases(artifacts, "race")) == [audit.CHAMPION]
    verdicts = [r for r in records if r["event"] == "gate_verdict"]
    assert {r["version"] for r in verdicts} == set(versions)


def test_killed_before_commit_leaves_no_visible_version(artifacts: str):
    registry.publish_version(artifacts, "crash", {"model.ubj": b"v1"}, {"identity": {"n": 1}, "prefect": {}})
    registry.set_alias(artifacts, "crash:1", "champion", "first", by="tester")

    proc = worker("crash", artifacts, "crash")
    proc.communicate(timeout=120)

    assert proc.returncode == -signal.SIGKILL
    assert registry.claimed_versions(artifacts, "crash") == [1, 2]  # it got as far as claiming and writing
    assert storage.exists(storage.join(registry.version_uri(artifacts, "crash", 2), "manifest.json"))
    assert registry.list_versions(artifacts, "crash") == [1]
    assert registry.resolve_version(artifacts, "crash") == ("crash", 1)
    assert registry.champion(artifacts, "crash") == 1
    assert registry.verify_registry(artifacts, "crash") == []
    assert [r["event"] for r in audit.read_log(artifacts, "crash")] == ["version_published", "alias_moved"]
    assert registry.publish_version(artifacts, "crash", {"model.ubj": b"v3"},
                                    {"identity": {"n": 3}, "prefect": {}})[0] == 3


def _log_with_records(artifacts: str, name: str, n: int = 4) -> None:
    for i in range(n):
        registry.publish_version(artifacts, name, {"model.ubj": f"m{i}".encode()},
                                 {"identity": {"n": i}, "prefect": {}})
    registry.set_alias(artifacts, f"{name}:2", "champion", "reviewed", by="tester")
    assert registry.verify_registry(artifacts, name) == []


def _edit(artifacts: str, name: str, seq: int, change: dict) -> None:
    uri = audit.record_uri(artifacts, name, seq)
    storage.write_bytes(uri, storage.dumps_json({**storage.read_json(uri), **change}))


def _swap(artifacts: str, name: str, a: int, b: int) -> None:
    first, second = (storage.read_bytes(audit.record_uri(artifacts, name, s)) for s in (a, b))
    storage.write_bytes(audit.record_uri(artifacts, name, a), second)
    storage.write_bytes(audit.record_uri(artifacts, name, b), first)


def _remove(artifacts: str, name: str, seq: int) -> None:
    fs, path = storage.get_fs(audit.record_uri(artifacts, name, seq))
    fs.rm(path)


TAMPERING = {
    "edit a field": (lambda a, n: _edit(a, n, 2, {"by": "mallory"}), "edited"),
    "edit and re-hash the record": (
        lambda a, n: _edit(a, n, 2, {"version": 9, "sha256": audit.content_sha256(
            {**storage.read_json(audit.record_uri(a, n, 2)), "version": 9})}), "chain broken"),
    "remove a middle record": (lambda a, n: _remove(a, n, 2), "missing"),
    "remove the last record": (lambda a, n: _remove(a, n, 5), "removed from the end"),
    "reorder two records": (lambda a, n: _swap(a, n, 2, 3), "reordered"),
    "retarget the champion": (lambda a, n: _edit(a, n, 5, {"version": 4}), "edited"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampering_with_one_record_is_detected(artifacts: str, how: str):
    _log_with_records(artifacts, "audited")
    tamper, expected = TAMPERING[how]

    tamper(artifacts, "audited")

    problems = registry.verify_registry(artifacts, "audited")
    assert problems, how
    assert any(expected in p for p in problems), problems


def test_audit_verify_command_exit_codes(moto_endpoint):
    artifacts = f"s3://{BUCKET}/cli-verify"  # the command finds the S3 endpoint in the environment
    _log_with_records(artifacts, "cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    ok = subprocess.run([sys.executable, "-m", "trainpipe", "audit", "verify", "cli", "--artifacts", artifacts,
                         "--json"], capture_output=True, text=True, env=env, timeout=120)
    _swap(artifacts, "cli", 1, 2)
    bad = subprocess.run([sys.executable, "-m", "trainpipe", "audit", "verify", "cli", "--artifacts", artifacts],
                         capture_output=True, text=True, env=env, timeout=120)

    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True, ok.stderr
    assert bad.returncode == 7
    assert "does not verify" in bad.stderr and "00000001.json" in bad.stderr
