"""The out-of-core data stages give what the in-memory ones give: the same contract, report and typed rows
(validate), the same parts (split), the same transform and partition bytes (features)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from tasks.features import apply_streaming, fit_transform, fit_transform_streaming
from tasks.split import PARTS, split_frame, split_streaming
from tasks.validate import validate_snapshot, validate_snapshot_streaming
from trainpipe import storage
from trainpipe.contract import infer_contract
from trainpipe.matrices import write_matrix
from trainpipe.outofcore import ParquetSink, iter_slices, plan_memory, sample_rows, source_memory_bytes
from trainpipe.spec import FeatureSpec, SplitSpec, ValidationSpec
from trainpipe.transform import matrix_frame

from .conftest import make_rows

ENFORCE = ValidationSpec()


def rows_with_trouble(n: int = 3000) -> pl.DataFrame:
    """Learnable rows plus a NaN, a null target, a date and a copy of the target (leakage)."""
    frame = make_rows(n, "binary", seed=3)
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(float("nan")).otherwise(pl.col("x1")).alias("x1"),
        pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("y")).alias("y"),
        pl.Series("day", [dt.date(2024, 1, 1) + dt.timedelta(days=i % 50) for i in range(n)]),
    ).with_columns(pl.col("y").alias("y_copy"))


@pytest.mark.parametrize("existing", [False, True])
def test_streaming_validate_matches_in_memory(write_snapshot, existing):
    frame = rows_with_trouble()
    contract = None
    if existing:  # a contract the new rows break: a narrower range, a missing level, a column gone
        contract = infer_contract(frame.filter(pl.col("y").is_not_null()).head(200).filter(pl.col("c") != "w"),
                                  "y", "binary", ["rid"])
        contract["columns"]["gone"] = {"kind": "numeric", "dtype": "Float64", "nullable": False}
        frame = frame.with_columns(pl.col("x2") * 3, pl.lit(1).alias("extra"))
    uri = write_snapshot(frame)
    spec = ValidationSpec(range_tolerance=0.0)
    args = (uri, "fp", "y", None, ["rid"], [], None, spec, contract)
    whole, used, report = validate_snapshot(*args)
    plan, used_streaming, report_streaming = validate_snapshot_streaming(*args)
    assert used_streaming == used
    assert report_streaming == report
    assert bool(report["violations"]) is existing
    assert report["leakage"] == ["y_copy"]
    assert plan.collect().equals(whole)


@pytest.mark.parametrize("method", ["random", "stratified", "time"])
def test_streaming_split_gives_the_same_parts(tmp_path, method, monkeypatch):
    from trainpipe import outofcore

    monkeypatch.setattr(outofcore, "SLICE_ROWS", 700)  # several slices, one of them short
    frame = make_rows(3000, "multiclass", seed=1).with_columns(pl.int_range(pl.len()).reverse().alias("t"))
    uri = str(tmp_path / "valid.parquet")
    storage.write_parquet(frame, uri)
    split = SplitSpec(method=method, time_column="t" if method == "time" else None)
    expected = split_frame(frame, split, "y", "multiclass", 11)
    uris, rows, digests = split_streaming(uri, frame.height, str(tmp_path / "parts"), split, "y", "multiclass", 11)
    assert len(digests) == 3
    for name in PARTS:
        assert rows[name] == expected[name].height > 0
        assert storage.read_parquet(uris[name]).equals(expected[name])


def test_streaming_features_fit_the_same_transform_and_write_the_same_partitions(tmp_path):
    frame = rows_with_trouble().filter(pl.col("y").is_not_null())
    uri = str(tmp_path / "train.parquet")
    storage.write_parquet(frame, uri)
    spec = FeatureSpec(derived=[{"name": "x12", "expr": "x1 * x2"}])
    transform = fit_transform(frame, "y", "binary", ["neg", "pos"], ["rid"], spec)
    assert fit_transform_streaming(uri, "y", "binary", ["neg", "pos"], ["rid"], spec) == transform
    _, expected = write_matrix(matrix_frame(frame, transform, uri), str(tmp_path / "memory"), 1000)
    uris, digests, rows = apply_streaming(uri, frame.height, transform, str(tmp_path / "streamed"), 1000)
    assert len(uris) == 3 and rows == frame.height
    assert digests == expected


def test_parquet_sink_writes_slices_as_one_object(tmp_path):
    frame = make_rows(2500, "regression")
    uri = str(tmp_path / "whole.parquet")
    storage.write_parquet(frame, uri)
    sink = ParquetSink(str(tmp_path / "copy.parquet"))
    starts = []
    for start, piece in iter_slices(uri, 1000):
        starts.append(start)
        sink.write(piece)
    digest = sink.close()
    assert starts == [0, 1000, 2000]
    assert sink.rows == 2500 and digest == storage.sha256_uri(sink.uri)
    assert storage.read_parquet(sink.uri).equals(frame)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_sample_rows_takes_distinct_rows_of_the_data(tmp_path):
    frame = make_rows(5000, "regression").with_row_index("row")
    uri = str(tmp_path / "train.parquet")
    storage.write_parquet(frame, uri)
    sample = sample_rows(uri, frame.height, 600, seed=2)
    assert sample.height == 600 and sample.get_column("row").n_unique() == 600
    assert frame.join(sample, on="row").select(pl.col("x1") == pl.col("x1_right")).to_series().all()
    assert sample_rows(uri, frame.height, 10_000).equals(frame)


def test_plan_memory_decides_from_the_data_size_and_the_room(tmp_path):
    frame = pl.DataFrame({f"x{i}": np.zeros(10_000) for i in range(10)})
    uri = str(tmp_path / "d.parquet")
    storage.write_parquet(frame, uri)
    files = [{"uri": uri, "format": "parquet", "size": 1}]
    size = source_memory_bytes(files)
    assert size >= 10_000 * 10 * 8  # zeros compress to nothing on disk; in memory they do not
    assert plan_memory("auto", files, available=3 * size)["out_of_core"] is True
    assert plan_memory("auto", files, available=5 * size)["out_of_core"] is False
    assert plan_memory("on", files)["out_of_core"] is True
    assert plan_memory("off", files)["out_of_core"] is False


def test_plan_memory_leaves_an_unreadable_parquet_to_ingest(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    files = [{"uri": str(bad), "format": "parquet", "size": bad.stat().st_size}]
    assert source_memory_bytes(files) == bad.stat().st_size
    assert plan_memory("auto", files, available=1 << 30)["out_of_core"] is False
