"""The Prefect server down for longer than the client's API retries, part-way through a run.

The run's process must end on its own (no hang), either completed (its API calls found the server again) or
with a non-zero exit and one clear error line naming the API, no traceback; the store holds nothing half-written
(every version committed and logged); once the server is back, the same command completes with one version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_killed import (
    ROOT,
    PrefectServer,
    audit_verify,
    flow_run_states,
    kill_data,  # noqa: F401 - a fixture
    own_server,  # noqa: F401 - a fixture
    server_env,
    train_until_tuning,
    write_spec,
)
from trainpipe import registry

pytestmark = pytest.mark.integration

DOWN_S = 45  # far beyond the client's retry budget below (2 retries: a few seconds of backoff)


def test_a_run_whose_server_stays_down_past_the_client_retries_ends_cleanly_and_a_rerun_completes(
        tmp_path: Path, kill_data: Path, own_server: PrefectServer):  # noqa: F811 - the fixtures
    spec, artifacts = write_spec(tmp_path, kill_data), tmp_path / "art"
    env = {**server_env(own_server.url), "PREFECT_CLIENT_MAX_RETRIES": "2"}
    log = tmp_path / "during"
    proc = train_until_tuning(spec, artifacts, log, env)
    own_server.stop()
    down_at = time.monotonic()
    try:
        code = proc.wait(timeout=DOWN_S)  # it may end while the server is down
    except subprocess.TimeoutExpired:
        code = None
    own_server.start()  # same port, same database
    down = time.monotonic() - down_at
    if code is None:
        code = proc.wait(timeout=300)
    err = log.with_suffix(".err").read_text()
    print(f"server down {down:.0f} s; run exited {code}; stderr tail: {err[-800:]}")
    versions = registry.list_versions(str(artifacts), "killed")
    assert registry.verify_registry(str(artifacts), "killed") == []  # nothing half-written, every version logged
    if code == 0:
        assert versions == [1]
    else:
        assert "Traceback" not in err, err[-3000:]
        assert code == 9 and f"trainpipe: error: the Prefect API at {own_server.url} cannot be reached" in err, err[-3000:]

    again = subprocess.run([sys.executable, "-m", "trainpipe", "train", str(spec), "--json"], cwd=ROOT,
                           env=server_env(own_server.url), check=False, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["version"] == 1 and registry.list_versions(str(artifacts), "killed") == [1]
    assert audit_verify(str(artifacts), "killed", server_env(own_server.url)) == 0
    assert [s for name, s in flow_run_states(own_server.url) if name == "trainpipe-train"][-1:] == ["COMPLETED"]
