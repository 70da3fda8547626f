"""The watcher against a real (temporary) Prefect server: a failed retrain is asked for again."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.train import train_flow
from tasks.watch import failure_uri, poll, read_state
from trainpipe import storage
from trainpipe.spec import parse_spec

pytestmark = pytest.mark.integration


def test_a_failed_triggered_retrain_is_asked_for_again_at_the_next_poll(tmp_path: Path):
    landing, store = tmp_path / "landing", str(tmp_path / "store")
    landing.mkdir()
    (landing / "batch.csv").write_text("x,z\n" + "".join(f"{i},{i % 3}\n" for i in range(40)))  # no column y

    assert poll(str(landing), "toy", "toy-model", store, retry_after_seconds=3600)["action"] == "settling"
    first = poll(str(landing), "toy", "toy-model", store, retry_after_seconds=3600)
    assert first["action"] == "emit"
    assert poll(str(landing), "toy", "toy-model", store, retry_after_seconds=3600)["action"] == "pending"

    # What the deployment trigger starts: the event's data, the event as `trigger`. It fails (no target).
    spec = parse_spec({"name": "toy-model", "data": {"uris": [str(landing)]}, "target": "y", "artifacts": store})
    trigger = {"id": first["event_id"], "dataset": "toy", "fingerprint": first["fingerprint"], "uri": str(landing)}
    with pytest.raises(Exception, match="'y'"):
        train_flow(spec, trigger=trigger)
    marker = storage.read_json(failure_uri(store, first["event_id"]))
    assert marker["state"] == "Failed" and marker["trigger"]["fingerprint"] == first["fingerprint"]

    again = poll(str(landing), "toy", "toy-model", store, retry_after_seconds=3600)
    assert again["action"] == "retry" and again["event_id"] != first["event_id"]
    assert read_state(store, "toy")["emitted"][first["fingerprint"]]["attempt"] == 2
    assert poll(str(landing), "toy", "toy-model", store, retry_after_seconds=3600)["action"] == "pending"


DIE_AFTER_CLAIM = """
import os, signal, sys
import tasks.watch as watch
watch.send_event = lambda event: os.kill(os.getpid(), signal.SIGKILL)  # dies between the claim and its state
watch.poll(sys.argv[1], "toy", "toy-model", sys.argv[2], retry_after_seconds=60)
"""


def test_a_poller_killed_between_its_claim_and_its_state_does_not_stick_the_watcher(tmp_path: Path):
    import datetime as dt
    import os
    import signal
    import subprocess
    import sys

    landing, store = tmp_path / "landing", str(tmp_path / "store")
    landing.mkdir()
    (landing / "batch.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    assert poll(str(landing), "toy", "toy-model", store, retry_after_seconds=60)["action"] == "settling"
    root = Path(__file__).resolve().parents[2]
    died = subprocess.run([sys.executable, "-c", DIE_AFTER_CLAIM, str(landing), store], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    claims = list((Path(store) / "watch" / "toy" / "claims").iterdir())
    assert len(claims) == 1 and claims[0].name.endswith("-1")  # the claim is there, its state is not
    assert "emitted" not in read_state(store, "toy") or not read_state(store, "toy")["emitted"]

    now = dt.datetime.now(dt.UTC)
    assert poll(str(landing), "toy", "toy-model", store, retry_after_seconds=60, now=now)["action"] == "pending"
    later = poll(str(landing), "toy", "toy-model", store, retry_after_seconds=60, now=now + dt.timedelta(seconds=61))
    assert later["action"] == "retry" and later["event_id"]
    assert read_state(store, "toy")["emitted"][later["fingerprint"]]["attempt"] == 2
