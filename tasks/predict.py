"""Predict: score new rows with a stored model version through its own stored transform."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from prefect import get_run_logger, task

from tasks.common import TRANSIENT_RETRIES
from trainpipe import storage
from trainpipe.errors import DataError, SpecError
from trainpipe.scoring import load_version, predict_rows
from trainpipe.sources import load_files, resolve_sources
from trainpipe.spec import DataSpec, infer_format

if TYPE_CHECKING:  # xgboost (and the scikit-learn it pulls in) loads only where a model is used
    import xgboost as xgb


def read_inputs(data_uri: str) -> pl.DataFrame:
    """Rows to score, from any file, glob or folder ingest can read."""
    spec = DataSpec(uris=[data_uri])
    return load_files(resolve_sources(spec), spec)


def score_frame(
    frame: pl.DataFrame, booster: xgb.Booster, transform: dict[str, Any], source: str, keep: Sequence[str] = ()
) -> pl.DataFrame:
    """Id (and kept) columns, the prediction and, for classification, one probability column per class.

    Scores are float32, the precision XGBoost computes them in.
    """
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: no column(s) {', '.join(missing)} to keep; columns: {', '.join(frame.columns)}")
    raw = predict_rows(booster, transform, frame, source)
    target = transform["target"]
    passthrough = list(dict.fromkeys([c for c in transform["id_columns"] if c in frame.columns] + list(keep)))
    ids = [frame.get_column(c) for c in passthrough]
    if target["task"] == "regression":
        return pl.DataFrame([*ids, pl.Series("prediction", raw, dtype=pl.Float32)])
    classes = target["classes"]
    prob = np.column_stack([1 - raw, raw]) if target["task"] == "binary" else raw
    labels = pl.Series("prediction", classes).gather(prob.argmax(axis=1))
    columns = [labels] + [pl.Series(f"proba_{c}", prob[:, i], dtype=pl.Float32) for i, c in enumerate(classes)]
    return pl.DataFrame([*ids, *columns])


def unseen_categories(frame: pl.DataFrame, transform: dict[str, Any]) -> dict[str, int]:
    """Per categorical column, how many rows hold a level the model never learned (scored as missing)."""
    counts = {}
    present = set(frame.columns)
    for entry in transform["inputs"]:
        if entry["kind"] == "categorical" and entry["name"] in present:
            values = frame.get_column(entry["name"]).cast(pl.String)
            unseen = int((values.is_not_null() & ~values.is_in(entry["levels"])).sum())
            if unseen:
                counts[entry["name"]] = unseen
    return counts


def write_frame(frame: pl.DataFrame, out_uri: str) -> None:
    """Write predictions in the format the output's suffix names, atomically."""
    fmt = infer_format(out_uri)
    if fmt == "parquet":
        storage.write_parquet(frame, out_uri)
        return
    buffer = io.BytesIO()
    frame.write_csv(buffer) if fmt == "csv" else frame.write_ndjson(buffer)
    storage.write_bytes(out_uri, buffer.getvalue())


def check_output_uri(out_uri: str) -> None:
    """Fail early on an output name whose format cannot be written."""
    try:
        infer_format(out_uri)
    except SpecError:
        raise SpecError(f"--out {out_uri!r}: use a .csv, .parquet or .ndjson file name") from None


def predict(artifacts: str, ref: str, data_uri: str, out_uri: str, keep: Sequence[str] = ()) -> dict[str, Any]:
    """Score `data_uri` with model `ref`, write to `out_uri`; returns what was done."""
    check_output_uri(out_uri)
    started = time.perf_counter()
    model = load_version(artifacts, ref)
    frame = read_inputs(data_uri)
    scored = score_frame(frame, model["booster"], model["transform"], data_uri, keep)
    write_frame(scored, out_uri)
    return {"model": model["name"], "version": model["version"], "rows": scored.height, "out": out_uri,
            "unseen_categories": unseen_categories(frame, model["transform"]),
            "seconds": round(time.perf_counter() - started, 3)}


@task(name="predict", **TRANSIENT_RETRIES)
def predict_task(artifacts: str, ref: str, data_uri: str, out_uri: str, keep: list[str]) -> dict[str, Any]:
    result = predict(artifacts, ref, data_uri, out_uri, keep)
    if result["unseen_categories"]:
        get_run_logger().warning("categories not seen in training (scored as missing): %s",
                                 result["unseen_categories"])
    return result
