"""Killed processes: real SIGKILLs at the worst moments, and a Prefect server restarted mid-run.

Every run that dies is an OS process of its own (the driver `killed_worker.py` or the `trainpipe` CLI),
killed with SIGKILL, never a raised exception standing in for one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from flows.train import train_flow
from trainpipe import audit, registry
from trainpipe.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def server_env(api_url: str | None = None) -> dict[str, str]:
    """The environment of a child process: this session's Prefect server (or `api_url`), no ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = api_url or PREFECT_API_URL.value()
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_a_run_sigkilled_between_commit_and_audit_record_is_repaired_by_the_next_run(tmp_path: Path,
                                                                                      penguins_csv: Path):
    artifacts = str(tmp_path / "art")
    killed = subprocess.run([sys.executable, str(HERE / "killed_worker.py"), "after-commit", artifacts,
                             str(penguins_csv), "penguins", "species"],
                            cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=300)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert registry.list_versions(artifacts, "penguins") == [1]  # committed ...
    assert audit.read_log(artifacts, "penguins") == []  # ... but never logged
    assert registry.verify_registry(artifacts, "penguins") == [
        "version 1 is committed but the audit log has no record of its publication"]

    spec = parse_spec({"name": "penguins", "data": {"uris": [str(penguins_csv)]}, "target": "species",
                       "artifacts": artifacts})
    repaired = train_flow(spec)

    assert repaired["version"] == 1 and not repaired["reused"] and repaired["promoted"]
    assert all(repaired["stages"][s]["cached"] for s in ("ingest", "validate", "split", "features", "train"))
    events = [(r["event"], r.get("version")) for r in audit.read_log(artifacts, "penguins")]
    assert events == [("version_published", 1), ("gate_verdict", 1), ("alias_moved", 1)]
    assert registry.champion(artifacts, "penguins") == 1
    verified = subprocess.run([sys.executable, "-m", "trainpipe", "audit", "verify", "penguins",
                               "--artifacts", artifacts], cwd=ROOT, env=server_env(), capture_output=True,
                              text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # no number was skipped or claimed twice: the next, different model is version 2
    changed = train_flow(spec.model_copy(update={"seed": 7}))
    assert changed["version"] == 2
    assert registry.claimed_versions(artifacts, "penguins") == [1, 2]
    assert registry.verify_registry(artifacts, "penguins") == []
