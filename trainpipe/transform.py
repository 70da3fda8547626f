"""The fitted feature transform applied to rows: the same code for every split part and for scoring.

A transform is plain JSON (column kinds, category levels, column order, target classes),
stored with each model version; fitting it is the features stage's job (`tasks/features.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from trainpipe.errors import DataError, SpecError

TRANSFORM_FORMAT = 1



LABEL = "__label__"



TIME_OF_DAY_PARTS = ("hour", "minute")



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
            # a categorical column beyond features.native_category_levels is its level's frequency rank
            native = entry["kind"] == "categorical" and entry.get("native", True)
            types.append("c" if native else "q")
    return names, types



def _raw_dtype(entry: dict[str, Any]) -> pl.DataType:
    return {"categorical": pl.String(), "boolean": pl.Boolean(), "datetime": pl.Datetime("us")}.get(
        entry["kind"], pl.Float64()
    )



def complete_columns(frame: pl.DataFrame, transform: dict[str, Any], source: str) -> pl.DataFrame:
    """Add optional input columns the data lacks (as nulls); a missing required one is an error."""
    derived_names = {d["name"] for d in transform["derived"]}
    used = [e for e in transform["inputs"] if e["kind"] != "drop" and e["name"] not in derived_names]
    present = set(frame.columns)
    missing = [e for e in used if e["name"] not in present]
    required = [e["name"] for e in missing if e["required"]]
    if required:
        raise DataError(f"{source}: missing required column(s) {', '.join(required)}")
    return frame.with_columns([pl.lit(None, dtype=_raw_dtype(e)).alias(e["name"]) for e in missing])



def _feature_exprs(entry: dict[str, Any], dtype: pl.DataType) -> list[pl.Expr]:
    column, kind = pl.col(entry["name"]), entry["kind"]
    if kind == "numeric":
        source = column.cast(pl.String).str.strip_chars() if not dtype.is_numeric() else column
        return [source.cast(pl.Float64, strict=False).cast(pl.Float32).alias(entry["name"])]
    if kind == "boolean":
        return [column.cast(pl.Float32, strict=False).alias(entry["name"])]
    if kind == "categorical":
        levels = entry["levels"]
        codes = column.cast(pl.String).replace_strict(levels, list(range(len(levels))), default=None,
                                                      return_dtype=pl.Float32)
        return [codes.alias(entry["name"])]
    # datetime: text (e.g. from NDJSON) is parsed first
    moment = column.str.to_datetime(strict=False) if dtype == pl.String else column
    return [DATETIME_PARTS[p](moment).cast(pl.Float32).alias(f"{entry['name']}__{p}") for p in entry["parts"]]



def check_numeric_inputs(frame: pl.DataFrame, transform: dict[str, Any], source: str) -> None:
    """Fail on text that is not a number in a column the model learned as numeric (scoring it as missing would
    hide an upstream bug). Columns learned from mostly-numeric text (`coerced_from`) keep their leniency."""
    schema = frame.schema  # once: polars builds it (and the column list) on every access
    for entry in transform["inputs"]:
        name = entry["name"]
        if entry["kind"] != "numeric" or entry.get("coerced_from") or name not in schema:
            continue
        if schema[name].is_numeric() or schema[name] == pl.Null:
            continue
        text = frame.get_column(name).cast(pl.String).str.strip_chars()
        bad = text.is_not_null() & (text.str.len_bytes() > 0) & text.cast(pl.Float64, strict=False).is_null()
        if not bad.any():
            continue
        rows = (pl.arg_where(bad, eager=True) + 1).head(5).to_list()
        shown = ", ".join(map(str, rows)) + (", ..." if bad.sum() > len(rows) else "")
        examples = ", ".join(repr(v) for v in text.filter(bad).unique(maintain_order=True).head(3).to_list())
        raise DataError(f"{source}: column {name!r} holds text that is not a number in {bad.sum()} row(s) "
                        f"(rows {shown}; e.g. {examples}); the model was trained on it as a number")


def apply_transform(frame: pl.DataFrame, transform: dict[str, Any], source: str = "data") -> pl.DataFrame:
    """The feature matrix of `frame`: the transform's columns, in its order, as Float32.

    Float32 is what XGBoost holds features as; numbers are parsed and computed as Float64 and rounded once at
    the end, as XGBoost would round a Float64 input, so the model sees the same values in half the memory."""
    frame = complete_columns(frame, transform, source)
    check_numeric_inputs(frame, transform, source)
    frame = add_derived(frame, transform["derived"])
    schema = frame.schema  # polars builds it on every access: once, not once per column
    exprs = [
        expr
        for entry in transform["inputs"]
        if entry["kind"] != "drop"
        for expr in _feature_exprs(entry, schema[entry["name"]])
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
