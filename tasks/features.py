"""Features: a transform fitted on the training part and applied alike to every part and to scoring data.

The fitted transform is plain JSON (column kinds, category levels, column order, target
classes), stored with the model so that `trainpipe predict` reproduces it exactly.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import polars as pl

from tasks.common import cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.errors import DataError, SpecError
from trainpipe.spec import FeatureSpec, TaskType

TRANSFORM_FORMAT = 1
LABEL = "__label__"

TIME_OF_DAY_PARTS = ("hour", "minute")
# A text column with more distinct values than this and than half its rows is an identifier, not a category.
MIN_IDENTIFIER_DISTINCT = 20
DATETIME_PARTS = {
    "year": lambda e: e.dt.year(),
    "month": lambda e: e.dt.month(),
    "day": lambda e: e.dt.day(),
    "weekday": lambda e: e.dt.weekday(),
    "hour": lambda e: e.dt.hour(),
    "minute": lambda e: e.dt.minute(),
    "dayofyear": lambda e: e.dt.ordinal_day(),
}


def add_derived(frame: pl.DataFrame, derived: list[dict[str, str]]) -> pl.DataFrame:
    """Compute the spec's derived columns from SQL expressions; a bad one is named."""
    for column in derived:
        try:
            frame = frame.with_columns(pl.sql_expr(column["expr"]).alias(column["name"]))
        except (pl.exceptions.PolarsError, ValueError) as error:
            raise SpecError(
                f"features.derived {column['name']!r}: cannot compute {column['expr']!r}: {error}"
            ) from None
    return frame


def _numeric_share(series: pl.Series) -> float:
    values = series.drop_nulls()
    if values.len() == 0:
        return 0.0
    parsed = values.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return parsed.drop_nulls().len() / values.len()


def fit_column(series: pl.Series, spec: FeatureSpec) -> dict[str, Any]:
    """How one input column becomes features: its kind and, for categories, its levels."""
    name, dtype = series.name, series.dtype
    entry: dict[str, Any] = {"name": name, "required": series.null_count() == 0}
    if series.null_count() == series.len():
        return {**entry, "kind": "drop", "reason": "no values in the training data"}
    if dtype.is_numeric():
        return {**entry, "kind": "numeric"}
    if dtype == pl.Boolean:
        return {**entry, "kind": "boolean"}
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        parts = [p for p in spec.datetime_parts if dtype != pl.Date or p not in TIME_OF_DAY_PARTS]
        return {**entry, "kind": "datetime", "parts": parts}
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        if _numeric_share(series) >= spec.numeric_threshold:
            return {**entry, "kind": "numeric", "coerced_from": "text"}
        counts = (
            series.drop_nulls().cast(pl.String).value_counts(name="n")
            .sort(["n", name], descending=[True, False])
        )
        non_null = series.len() - series.null_count()
        if counts.height > max(MIN_IDENTIFIER_DISTINCT, 0.5 * non_null):
            return {**entry, "kind": "drop",
                    "reason": f"{counts.height} distinct text values in {non_null} rows: an identifier or free text"}
        kept = counts.filter(pl.col("n") >= spec.min_category_count).get_column(name).head(spec.max_categories)
        return {**entry, "kind": "categorical", "levels": kept.to_list(), "rare_levels": counts.height - kept.len()}
    return {**entry, "kind": "drop", "reason": f"type {dtype} is not supported"}


def feature_columns(inputs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Output feature names and XGBoost feature types ('q' numeric, 'c' categorical), in order."""
    names, types = [], []
    for entry in inputs:
        if entry["kind"] == "datetime":
            for part in entry["parts"]:
                names.append(f"{entry['name']}__{part}")
                types.append("q")
        elif entry["kind"] != "drop":
            names.append(entry["name"])
            types.append("c" if entry["kind"] == "categorical" else "q")
    return names, types


def fit_transform(
    train: pl.DataFrame,
    target: str,
    task_type: TaskType,
    classes: Optional[list[Any]],
    id_columns: list[str],
    spec: FeatureSpec,
) -> dict[str, Any]:
    """Fit the transform on the training part."""
    derived = [d.model_dump() for d in spec.derived]
    raw_columns = [c for c in train.columns if c != target and c not in id_columns]
    frame = add_derived(train, derived)
    candidates = raw_columns + [d["name"] for d in derived if d["name"] not in raw_columns]
    inputs = [fit_column(frame.get_column(name), spec) for name in candidates]
    names, types = feature_columns(inputs)
    if not names:
        raise DataError(f"no usable feature columns besides the target {target!r}")
    return {
        "format": TRANSFORM_FORMAT,
        "target": {"name": target, "task": task_type, "classes": classes},
        "id_columns": list(id_columns),
        "raw_columns": raw_columns,
        "derived": derived,
        "inputs": inputs,
        "features": names,
        "feature_types": types,
    }


def _raw_dtype(entry: dict[str, Any]) -> pl.DataType:
    return {"categorical": pl.String(), "boolean": pl.Boolean(), "datetime": pl.Datetime("us")}.get(
        entry["kind"], pl.Float64()
    )


def complete_columns(frame: pl.DataFrame, transform: dict[str, Any], source: str) -> pl.DataFrame:
    """Add optional input columns the data lacks (as nulls); a missing required one is an error."""
    derived_names = {d["name"] for d in transform["derived"]}
    used = [e for e in transform["inputs"] if e["kind"] != "drop" and e["name"] not in derived_names]
    missing = [e for e in used if e["name"] not in frame.columns]
    required = [e["name"] for e in missing if e["required"]]
    if required:
        raise DataError(f"{source}: missing required column(s) {', '.join(required)}")
    return frame.with_columns([pl.lit(None, dtype=_raw_dtype(e)).alias(e["name"]) for e in missing])


def _feature_exprs(entry: dict[str, Any], dtype: pl.DataType) -> list[pl.Expr]:
    column, kind = pl.col(entry["name"]), entry["kind"]
    if kind == "numeric":
        source = column.cast(pl.String).str.strip_chars() if not dtype.is_numeric() else column
        return [source.cast(pl.Float64, strict=False).alias(entry["name"])]
    if kind == "boolean":
        return [column.cast(pl.Float64, strict=False).alias(entry["name"])]
    if kind == "categorical":
        levels = entry["levels"]
        codes = column.cast(pl.String).replace_strict(levels, list(range(len(levels))), default=None,
                                                      return_dtype=pl.Float64)
        return [codes.alias(entry["name"])]
    # datetime: text (e.g. from NDJSON) is parsed first
    moment = column.str.to_datetime(strict=False) if dtype == pl.String else column
    return [DATETIME_PARTS[p](moment).cast(pl.Float64).alias(f"{entry['name']}__{p}") for p in entry["parts"]]


def apply_transform(frame: pl.DataFrame, transform: dict[str, Any], source: str = "data") -> pl.DataFrame:
    """The feature matrix of `frame`: the transform's columns, in its order, as Float64."""
    frame = complete_columns(frame, transform, source)
    frame = add_derived(frame, transform["derived"])
    exprs = [
        expr
        for entry in transform["inputs"]
        if entry["kind"] != "drop"
        for expr in _feature_exprs(entry, frame.schema[entry["name"]])
    ]
    return frame.select(exprs).select(transform["features"])


def encode_target(series: pl.Series, transform: dict[str, Any], source: str = "data") -> np.ndarray:
    """Labels for XGBoost: class index for classification, the value for regression."""
    target = transform["target"]
    if target["task"] == "regression":
        values = series.cast(pl.Float64, strict=False)
        if values.null_count() > series.null_count():
            raise DataError(f"{source}: target {series.name!r} has values that are not numbers")
        return values.to_numpy()
    classes = target["classes"]
    codes = series.replace_strict(classes, list(range(len(classes))), default=None, return_dtype=pl.Int32)
    unknown = series.filter(codes.is_null() & series.is_not_null()).unique().head(5).to_list()
    if unknown:
        raise DataError(f"{source}: target {series.name!r} has values outside the classes {classes}: {unknown}")
    return codes.to_numpy().astype(np.float32)


def matrix_frame(part: pl.DataFrame, transform: dict[str, Any], source: str) -> pl.DataFrame:
    """Features plus the encoded label, ready to be written for training."""
    features = apply_transform(part, transform, source)
    label = encode_target(part.get_column(transform["target"]["name"]), transform, source)
    return features.with_columns(pl.Series(LABEL, label, dtype=pl.Float64))


@cached_stage("features")
def features_task(
    parts: dict[str, Any],
    validated: dict[str, Any],
    target: str,
    id_columns: list[str],
    features: FeatureSpec,
    artifacts: str,
) -> dict[str, Any]:
    started = time.perf_counter()
    folder = current_stage_dir("features")
    train = storage.read_parquet(parts["uris"]["train"])
    transform = fit_transform(train, target, validated["task"], validated["classes"], id_columns, features)
    uris, digests = {}, []
    for name, uri in parts["uris"].items():
        frame = train if name == "train" else storage.read_parquet(uri)
        uris[name] = storage.join(folder, f"{name}.parquet")
        digests.append(storage.write_parquet(matrix_frame(frame, transform, uri), uris[name]))
    digests.append(storage.write_json(storage.join(folder, "transform.json"), transform))
    meta = {
        "uris": uris,
        "transform_uri": storage.join(folder, "transform.json"),
        "features": transform["features"],
        "feature_types": transform["feature_types"],
        "dropped": [{"column": e["name"], "reason": e["reason"]} for e in transform["inputs"] if e["kind"] == "drop"],
    }
    return finish_stage(folder, meta, started, content=digests)
