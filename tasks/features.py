"""Features: a transform fitted on the training part and applied alike to every part and to scoring data.

The fitted transform is plain JSON (column kinds, category levels, column order, target
classes), stored with the model so that `trainpipe predict` reproduces it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

import polars as pl

from tasks.common import cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.matrices import write_matrix
from trainpipe.results import Matrices, Parts, Validated
from trainpipe.spec import FeatureSpec, TaskType
from trainpipe.transform import TIME_OF_DAY_PARTS, TRANSFORM_FORMAT, add_derived, feature_columns, matrix_frame

# A text column with more distinct values than this and than half its rows is an identifier, not a category.
MIN_IDENTIFIER_DISTINCT = 20


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
        return {**entry, "kind": "categorical", "levels": kept.to_list(), "rare_levels": counts.height - kept.len(),
                "native": kept.len() <= spec.native_category_levels}
    return {**entry, "kind": "drop", "reason": f"type {dtype} is not supported"}


def fit_transform(
    train: pl.DataFrame,
    target: str,
    task_type: TaskType,
    classes: Optional[list[Any]],
    id_columns: list[str],
    spec: FeatureSpec,
) -> dict[str, Any]:
    """Fit the transform on the training part."""
    frame = add_derived(train, [d.model_dump() for d in spec.derived])
    return fit_transform_columns(train.columns, frame.get_column, target, task_type, classes, id_columns, spec)


def fit_transform_columns(
    columns: list[str],
    column: Callable[[str], pl.Series],
    target: str,
    task_type: TaskType,
    classes: Optional[list[Any]],
    id_columns: list[str],
    spec: FeatureSpec,
) -> dict[str, Any]:
    """Fit the transform from the training part's column names and one column at a time (`column(name)`, derived
    columns included): each column's kind and levels depend on that column alone."""
    derived = [d.model_dump() for d in spec.derived]
    raw_columns = [c for c in columns if c != target and c not in id_columns]
    candidates = raw_columns + [d["name"] for d in derived if d["name"] not in raw_columns]
    inputs = [fit_column(column(name), spec) for name in candidates]
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


def fit_transform_streaming(
    train_uri: str, target: str, task_type: TaskType, classes: Optional[list[Any]], id_columns: list[str],
    spec: FeatureSpec,
) -> dict[str, Any]:
    """`fit_transform` reading the training part one column at a time (a derived column from the columns its
    expression reads): the same transform in the memory of a column."""
    from trainpipe.outofcore import scan_uri

    scan = scan_uri(train_uri)
    exprs = {d.name: d.expr for d in spec.derived}

    def column(name: str) -> pl.Series:
        if name in exprs:
            return add_derived(scan, [{"name": name, "expr": exprs[name]}]).select(name).collect(
                engine="streaming").to_series()
        return scan.select(name).collect(engine="streaming").to_series()

    return fit_transform_columns(scan.collect_schema().names(), column, target, task_type, classes, id_columns,
                                 spec)


def apply_streaming(uri: str, rows: Optional[int], transform: dict[str, Any], folder: str,
                    partition_rows: int) -> tuple[list[str], list[str], int]:
    """Apply the transform to a part one partition's rows at a time, each written as its partition: the same
    partitions as `write_matrix` over the whole part (the transform works row by row)."""
    from trainpipe.matrices import partition_name
    from trainpipe.outofcore import iter_slices

    uris, digests, total = [], [], 0
    for index, (_, frame) in enumerate(iter_slices(uri, partition_rows, rows)):
        uris.append(storage.join(folder, partition_name(index)))
        digests.append(storage.write_parquet(matrix_frame(frame, transform, uri), uris[-1]))
        total += frame.height
    return uris, digests, total


@cached_stage("features", Matrices)
def features_task(
    parts: Parts,
    validated: Validated,
    target: str,
    id_columns: list[str],
    features: FeatureSpec,
    artifacts: str,
    partition_rows: int = 1_000_000,
    out_of_core: bool = False,
) -> Matrices:
    """Fit the transform on the training part, apply it to every part and write each as Parquet partitions."""
    started = time.perf_counter()
    folder = current_stage_dir("features")
    if out_of_core:
        return _features_streaming(parts, validated, target, id_columns, features, folder, partition_rows, started)
    train = storage.read_parquet(parts.uris["train"])
    transform = fit_transform(train, target, validated.task_type, validated.classes, id_columns, features)
    uris, rows, partitions, digests = {}, {}, {}, []
    for name, uri in parts.uris.items():
        frame = train if name == "train" else storage.read_parquet(uri)
        uris[name], rows[name] = storage.join(folder, name), frame.height
        # Applied partition by partition (the transform is row-wise): the same files, without the whole matrix.
        partitions[name], written = write_matrix(frame, uris[name], partition_rows,
                                                 apply=lambda rows, source=uri: matrix_frame(rows, transform, source))
        digests.extend(written)
    digests.append(storage.write_json(storage.join(folder, "transform.json"), transform))
    return finish_stage(folder, Matrices, _matrices_meta(folder, transform, uris, rows, partitions), started,
                        content=digests)


def _matrices_meta(folder: str, transform: dict[str, Any], uris: dict[str, str], rows: dict[str, int],
                   partitions: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "uris": uris,
        "rows": rows,
        "partitions": partitions,
        "transform_uri": storage.join(folder, "transform.json"),
        "features": transform["features"],
        "feature_types": transform["feature_types"],
        "dropped": [{"column": e["name"], "reason": e["reason"]} for e in transform["inputs"] if e["kind"] == "drop"],
    }


def _features_streaming(parts: Parts, validated: Validated, target: str, id_columns: list[str],
                        features: FeatureSpec, folder: str, partition_rows: int, started: float) -> Matrices:
    """The features stage out of core: fitted column by column, applied and written partition by partition."""
    transform = fit_transform_streaming(parts.uris["train"], target, validated.task_type, validated.classes,
                                        id_columns, features)
    uris, rows, partitions, digests = {}, {}, {}, []
    for name, uri in parts.uris.items():
        uris[name] = storage.join(folder, name)
        partitions[name], written, rows[name] = apply_streaming(uri, parts.rows.get(name), transform, uris[name],
                                                                partition_rows)
        digests.extend(written)
    digests.append(storage.write_json(storage.join(folder, "transform.json"), transform))
    meta = {**_matrices_meta(folder, transform, uris, rows, partitions), "out_of_core": True}
    return finish_stage(folder, Matrices, meta, started, content=digests)
