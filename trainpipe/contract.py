"""The data contract: what a model's data looked like (column kinds, nullability, ranges, categories, the
target's task and classes), inferred from the first version's rows. Checking data against it is the
validate stage's job (`tasks/validate.py`)."""

from __future__ import annotations

from typing import Any, Optional

import polars as pl

from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.provenance import stage_key
from trainpipe.spec import TaskType

CONTRACT_FORMAT = 1



MAX_CONTRACT_CATEGORIES = 1000



MAX_CLASSES = 100



MAX_INT_CLASSES = 10



CANONICAL_DTYPES: dict[str, pl.DataType] = {
    "numeric": pl.Float64(),
    "string": pl.String(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
}



def column_dtype(entry: dict[str, Any]) -> pl.DataType | None:
    """The dtype a contract entry's column is cast to: numbers are Float64, except a column first seen as Float32,
    which stays Float32 (XGBoost holds features and labels as float32: widening it would only double the column in
    memory and on disk, at 2M rows of 20 float32 columns +305 MB in the validate stage, without adding a digit)."""
    if entry["kind"] == "numeric" and entry.get("dtype") == "Float32":
        return pl.Float32()
    return CANONICAL_DTYPES.get(entry["kind"])



def column_kind(dtype: pl.DataType) -> str:
    """The contract's coarse type family of a polars dtype."""
    if dtype.is_numeric():
        return "numeric"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        return "string"
    return "other"



def infer_task(target: pl.Series) -> tuple[TaskType, str]:
    """binary, multiclass or regression from the non-null target values, and the reason why."""
    values = target.drop_nulls()
    distinct = values.n_unique()
    name = target.name
    if distinct < 2:
        raise DataError(f"target column {name!r} has {distinct} distinct non-null value(s); nothing to learn")
    kind = column_kind(target.dtype)
    if kind in ("boolean", "string"):
        if distinct == 2:
            return "binary", f"{name!r} holds 2 distinct {kind} values"
        if distinct <= MAX_CLASSES:
            return "multiclass", f"{name!r} holds {distinct} distinct {kind} values"
        raise DataError(
            f"target column {name!r} holds {distinct} distinct text values: too many classes; "
            "set task: regression after converting it to numbers, or choose another target"
        )
    if kind != "numeric":
        raise DataError(f"target column {name!r} has type {target.dtype}, which cannot be learned")
    integral = bool((values.cast(pl.Float64) % 1 == 0).all())
    if distinct == 2 and integral:
        return "binary", f"{name!r} holds 2 distinct whole numbers"
    if integral and target.dtype.is_integer() and distinct <= MAX_INT_CLASSES:
        return "multiclass", f"{name!r} holds {distinct} distinct integers (<= {MAX_INT_CLASSES})"
    return "regression", f"{name!r} is numeric with {distinct} distinct values"



def target_classes(target: pl.Series) -> list[Any]:
    """Sorted distinct target values: the class order of the model's outputs."""
    return [storage.plain_scalar(v) for v in target.drop_nulls().unique().sort().to_list()]



def contract_origin(
    snapshot_fingerprint: str, target: str, task_type: Optional[TaskType], id_columns: list[str],
    drop_columns: list[str],
) -> str:
    """What a contract was inferred from: the data and the spec fields that shape it.

    Inference is deterministic, so validating data against a contract inferred from that
    same data with the same fields is the same as inferring it again (and is cached so).
    """
    return stage_key("contract", {"snapshot": snapshot_fingerprint, "target": target, "task": task_type,
                                  "id_columns": id_columns, "drop_columns": drop_columns})



def infer_contract(frame: pl.DataFrame, target: str, task: TaskType, id_columns: list[str]) -> dict[str, Any]:
    """The data contract observed in `frame` (null targets already dropped)."""
    columns: dict[str, Any] = {}
    for name, dtype in frame.schema.items():
        series = frame.get_column(name)
        kind = column_kind(dtype)
        entry: dict[str, Any] = {"kind": kind, "dtype": str(dtype), "nullable": series.null_count() > 0}
        if name not in id_columns:
            if kind == "numeric" and not (name == target and task != "regression"):
                entry["min"], entry["max"] = storage.plain_scalar(series.min()), storage.plain_scalar(series.max())
            if kind == "string":
                levels = series.drop_nulls().unique()
                if levels.len() <= MAX_CONTRACT_CATEGORIES:
                    entry["categories"] = sorted(str(v) for v in levels.to_list())
        columns[name] = entry
    contract: dict[str, Any] = {
        "format": CONTRACT_FORMAT,
        "target": {"name": target, "task": task},
        "id_columns": list(id_columns),
        "columns": columns,
        "rows_seen": frame.height,
    }
    if task != "regression":
        contract["target"]["classes"] = target_classes(frame.get_column(target))
    return contract
