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
