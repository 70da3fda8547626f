"""tasks.watch: the listing a watcher compares, and what one poll decides."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tasks.watch import build_event, decide, listing, read_state, record_trigger_failure, state_uri
from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.sources import resolve_sources, sources_fingerprint
from trainpipe.spec import DataSpec

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SEEN = {"fingerprint": "f1", "files": 2, "bytes": 10}


def asked(minutes_ago: float, attempt: int = 1) -> dict:
    return {"event_id": "e1", "at": (NOW - dt.timedelta(minutes=minutes_ago)).isoformat(), "attempt": attempt}


@pytest.mark.parametrize(
    ("state", "seen", "trained", "failed", "expected"),
    [
        ({"listing": None, "emitted": {}}, None, None, False, "empty"),
        ({"listing": None, "emitted": {}}, SEEN, None, False, "settling"),  # first sight: wait one poll
        ({"listing": "f0", "emitted": {}}, SEEN, None, False, "settling"),  # still changing: a burst
        ({"listing": "f1", "emitted": {}}, SEEN, None, False, "emit"),
        ({"listing": "f1", "emitted": {}}, SEEN, 3, False, "trained"),  # a version holds it: never twice
        ({"listing": "f1", "emitted": {"f1": asked(5)}}, SEEN, None, False, "pending"),
        ({"listing": "f1", "emitted": {"f1": asked(5)}}, SEEN, None, True, "retry"),  # the retrain failed
        ({"listing": "f1", "emitted": {"f1": asked(31)}}, SEEN, None, False, "retry"),  # no word for too long
        ({"listing": "f1", "emitted": {"f1": asked(31)}}, SEEN, 4, True, "trained"),
    ],
)
def test_decide(state, seen, trained, failed, expected):
    assert decide(state, seen, trained, failed, NOW, retry_after_seconds=1800) == expected


def test_listing_fingerprint_is_the_one_training_records(tmp_path: Path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "b.csv").write_text("x,y\n3,4\n")
    (tmp_path / "_SUCCESS").write_text("")
    seen = listing(str(tmp_path))
    assert seen["files"] == 2 and seen["bytes"] == 16
    assert seen["fingerprint"] == sources_fingerprint(resolve_sources(DataSpec(uris=[str(tmp_path)])))
    (tmp_path / "b.csv").write_text("x,y\n3,5\n")  # same size, new content: a new fingerprint
    assert listing(str(tmp_path))["fingerprint"] != seen["fingerprint"]


def test_listing_of_an_empty_or_missing_location_is_none(tmp_path: Path):
    assert listing(str(tmp_path)) is None
    assert listing(str(tmp_path / "missing")) is None


def test_event_names_the_dataset_and_fingerprint():
    event = build_event("penguins", "s3://b/landing/", SEEN, "penguins-species", source="watcher")
    assert event.event == "trainpipe.data.arrived"
    assert event.resource.id == "trainpipe.dataset.penguins"
    assert event.payload == {"dataset": "penguins", "uri": "s3://b/landing/", "fingerprint": "f1", "files": 2,
                             "bytes": 10, "model": "penguins-species", "source": "watcher"}


def test_state_and_failure_marker_live_in_the_store(tmp_path: Path):
    root = str(tmp_path)
    assert read_state(root, "penguins") == {"dataset": "penguins", "listing": None, "emitted": {}}
    storage.write_json(state_uri(root, "penguins"), {"dataset": "penguins", "listing": "f1", "emitted": {}})
    assert read_state(root, "penguins")["listing"] == "f1"
    uri = record_trigger_failure(root, {"id": "e1", "fingerprint": "f1"}, "Failed", "boom")
    assert storage.read_json(uri)["trigger"]["fingerprint"] == "f1"
    assert record_trigger_failure(root, {}, "Failed", "no event id") is None


def test_listing_of_a_location_whose_folder_does_not_exist_is_an_error(tmp_path: Path):
    """A mistyped root must surface, not read as 'no data yet' on every poll."""
    with pytest.raises(DataError, match="cannot watch .*typo/landing"):
        listing(str(tmp_path / "typo" / "landing"))
    assert listing(str(tmp_path / "landing" / "*.csv")) is None  # a glob in a folder that exists: waiting
