"""tasks.common and trainpipe.provenance: which failures are retried, content-addressed stage folders."""

from __future__ import annotations

import pytest

from tasks.common import content_fingerprint, is_transient, stage_dir
from trainpipe.errors import ContractViolation, DataError, SpecError
from trainpipe.provenance import canonical, stage_key
from trainpipe.spec import SplitSpec


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionError("reset"), True),
        (TimeoutError("slow"), True),
        (OSError("io"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("no"), False),
        (IsADirectoryError("dir"), False),
        (DataError("bad data"), False),
        (SpecError("bad spec"), False),
        (ContractViolation("broken"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def test_canonical_reduces_stage_outputs_to_their_fingerprint():
    value = {"snapshot": {"uri": "/tmp/a", "rows": 3, "fingerprint": "abc"}, "split": SplitSpec(test_fraction=0.3)}
    out = canonical(value)
    assert out["snapshot"] == {"fingerprint": "abc"}
    assert out["split"]["test_fraction"] == 0.3


def test_stage_key_depends_on_content_not_location():
    a = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 1})
    moved = stage_key("split", {"validated": {"uri": "/y/data.parquet", "fingerprint": "f1"}, "seed": 1})
    other = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f2"}, "seed": 1})
    other_seed = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 2})
    other_stage = stage_key("features", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 1})
    assert a == moved
    assert len({a, other, other_seed, other_stage}) == 4


def test_stage_dir_layout():
    folder = stage_dir("s3://bucket/art/", "ingest", {"sources": {"fingerprint": "f"}})
    assert folder == f"s3://bucket/art/cache/ingest/{stage_key('ingest', {'sources': {'fingerprint': 'f'}})}"


def test_content_fingerprint_is_order_sensitive_and_stable():
    assert content_fingerprint("a", 1) == content_fingerprint("a", 1)
    assert content_fingerprint("a", 1) != content_fingerprint(1, "a")
