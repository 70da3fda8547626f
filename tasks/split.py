"""Split: train / validation (early stopping) / test, deterministic for a seed and data."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import polars as pl

from tasks.common import cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.results import PART_ORDER, Parts, Validated
from trainpipe.spec import SplitSpec, TaskType

PARTS = PART_ORDER
MIN_ROWS = 20


def resolve_method(split: SplitSpec, task_type: TaskType) -> str:
    """The spec's method, or stratified for classification and random for regression."""
    if split.method:
        return split.method
    return "random" if task_type == "regression" else "stratified"


def _take(n: int, fraction: float) -> int:
    """Rows for a held-out part: at least one, leaving at least one."""
    return min(max(1, math.ceil(n * fraction)), n - 1)


def random_assignment(n: int, test_fraction: float, valid_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Part labels 0/1/2 (train/valid/test) for n rows in random order."""
    order = rng.permutation(n)
    n_test = _take(n, test_fraction)
    n_valid = _take(n - n_test, valid_fraction)
    labels = np.zeros(n, dtype=np.int8)
    labels[order[:n_test]] = 2
    labels[order[n_test : n_test + n_valid]] = 1
    return labels


def stratified_assignment(
    classes: np.ndarray, test_fraction: float, valid_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Random assignment within each class, so every part keeps the class shares."""
    labels = np.zeros(len(classes), dtype=np.int8)
    for value in np.unique(classes):
        rows = np.flatnonzero(classes == value)
        if len(rows) < 3:
            continue  # too rare to spread over three parts: training keeps it
        labels[rows] = random_assignment(len(rows), test_fraction, valid_fraction, rng)
    return labels


def time_assignment(order_values: pl.Series, test_fraction: float, valid_fraction: float) -> np.ndarray:
    """Latest rows to test, the ones before them to validation, the rest to training."""
    if order_values.null_count():
        raise DataError(f"time column {order_values.name!r} has {order_values.null_count()} null value(s)")
    n = order_values.len()
    # Sort by time, ties kept in file order, so the split is deterministic.
    order = (
        order_values.to_frame("t").with_row_index("row").sort(["t", "row"]).get_column("row").to_numpy()
    )
    n_test = _take(n, test_fraction)
    n_valid = _take(n - n_test, valid_fraction)
    labels = np.zeros(n, dtype=np.int8)
    labels[order[n - n_test :]] = 2
    labels[order[n - n_test - n_valid : n - n_test]] = 1
    return labels


def class_codes(values: pl.Series) -> np.ndarray:
    """Each row's class as its index among the sorted class labels (as text): the order and grouping
    `np.unique` gives the labels themselves, in a small integer array instead of a Python string per row."""
    text = values.cast(pl.String)
    return text.unique().sort().search_sorted(text).to_numpy()


def assign_parts(frame: pl.DataFrame, split: SplitSpec, target: str, task_type: TaskType, seed: int) -> np.ndarray:
    """Part label per row (0 train, 1 valid, 2 test)."""
    if frame.height < MIN_ROWS:
        raise DataError(f"only {frame.height} rows with a target; at least {MIN_ROWS} are needed to split")
    method = resolve_method(split, task_type)
    rng = np.random.default_rng(seed)
    if method == "time":
        return time_assignment(frame.get_column(split.time_column), split.test_fraction, split.validation_fraction)
    if method == "stratified":
        if task_type == "regression":
            raise DataError("split.method stratified needs a classification task")
        return stratified_assignment(class_codes(frame.get_column(target)), split.test_fraction, split.validation_fraction, rng)
    return random_assignment(frame.height, split.test_fraction, split.validation_fraction, rng)


def iter_parts(
    frame: pl.DataFrame, split: SplitSpec, target: str, task_type: TaskType, seed: int
) -> Iterator[tuple[str, pl.DataFrame]]:
    """The three parts one after the other, each in the frame's original row order: a caller that writes each
    part and lets it go holds the frame and one part, not the frame and all three."""
    labels = pl.Series("_part", assign_parts(frame, split, target, task_type, seed))
    for code, part in enumerate(PARTS):
        yield part, frame.filter(labels == code)


def label_columns(split: SplitSpec, target: str, task_type: TaskType) -> list[str]:
    """The one column the part labels depend on: the time column for a time split, else the target."""
    method = resolve_method(split, task_type)
    return [split.time_column] if method == "time" and split.time_column else [target]


def iter_stored_parts(
    uri: str, split: SplitSpec, target: str, task_type: TaskType, seed: int
) -> Iterator[tuple[str, pl.DataFrame]]:
    """`iter_parts` of a stored Parquet object. A local one is never read whole: the labels come from the one
    column they depend on (the same labels as from the whole frame), then each part is a scan filtered by its
    rows' mask, so memory holds one part at a time. A remote object is downloaded once and split in memory."""
    from fsspec.implementations.local import LocalFileSystem

    from trainpipe.outofcore import read_columns

    fs, path = storage.get_fs(uri)
    if not isinstance(fs, LocalFileSystem):
        yield from iter_parts(storage.read_parquet(uri), split, target, task_type, seed)
        return
    labels = assign_parts(read_columns(uri, label_columns(split, target, task_type)), split, target, task_type, seed)
    for code, part in enumerate(PARTS):
        yield part, pl.scan_parquet(path).filter(pl.lit(pl.Series("_part", labels == code))).collect()


def split_frame(
    frame: pl.DataFrame, split: SplitSpec, target: str, task_type: TaskType, seed: int
) -> dict[str, pl.DataFrame]:
    """The three parts, each in the frame's original row order."""
    return dict(iter_parts(frame, split, target, task_type, seed))


def split_streaming(
    uri: str, rows: int, folder: str, split: SplitSpec, target: str, task_type: TaskType, seed: int
) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """`split_frame` in bounded memory: the part labels come from the one column they depend on (the target,
    or the time column), so they are the same as in memory; the rows go to the parts slice by slice."""
    from trainpipe.outofcore import SLICE_ROWS, ParquetSink, iter_slices, read_columns

    labels = assign_parts(read_columns(uri, label_columns(split, target, task_type)), split, target, task_type, seed)
    sinks = {name: ParquetSink(storage.join(folder, f"{name}.parquet")) for name in PARTS}
    empty = None
    for start, frame in iter_slices(uri, SLICE_ROWS, rows):
        codes = pl.Series("_part", labels[start:start + frame.height])
        empty = frame.head(0)
        for code, name in enumerate(PARTS):
            sinks[name].write(frame.filter(codes == code))
    digests = [sinks[name].close(empty) for name in PARTS]
    return ({name: sink.uri for name, sink in sinks.items()}, {name: sink.rows for name, sink in sinks.items()},
            digests)


@cached_stage("split", Parts)
def split_task(
    validated: Validated,
    split: SplitSpec,
    target: str,
    task_type: TaskType,
    seed: int,
    artifacts: str,
    out_of_core: bool = False,
) -> Parts:
    started = time.perf_counter()
    folder = current_stage_dir("split")
    if out_of_core:
        uris, rows, digests = split_streaming(validated.uri, validated.rows, folder, split, target, task_type, seed)
        meta = {"uris": uris, "rows": rows, "method": resolve_method(split, task_type), "out_of_core": True}
        return finish_stage(folder, Parts, meta, started, content=digests)
    uris, rows, digests = {}, {}, []
    for name, part in iter_stored_parts(validated.uri, split, target, task_type, seed):
        uris[name], rows[name] = storage.join(folder, f"{name}.parquet"), part.height
        digests.append(storage.write_parquet(part, uris[name]))
        del part  # written: the next part is built without this one in memory
    meta = {"uris": uris, "rows": rows, "method": resolve_method(split, task_type)}
    return finish_stage(folder, Parts, meta, started, content=digests)
