"""Training and scoring on feature matrices larger than memory: XGBoost's external memory over the partitions.

The features stage writes each part as Parquet partitions (`trainpipe.matrices`). Here an `xgboost.DataIter`
hands XGBoost one partition per `next()` call (read with polars, features as float32, the label), so an
`ExtMemQuantileDMatrix` holds only its histogram pages, cached on local disk, never the whole matrix; scoring
predicts partition by partition. Which path a fit takes is `compute.external_memory` (`use_external_memory`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import polars as pl

from trainpipe import storage
from trainpipe.matrices import partition_uris
from trainpipe.results import Matrices
from trainpipe.transform import LABEL

if TYPE_CHECKING:
    import xgboost as xgb

# auto: external memory when the float32 training + validation matrices would take more than this share of
# the memory left to the process (the in-memory fit peaks at about 3x the float32 matrix: frame, array, bins).
AUTO_MEMORY_FRACTION = 1 / 3
CACHE_DIR_ENV = "TRAINPIPE_EXTMEM_DIR"


def _read_first_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return None if text == "max" else int(text)


def _cgroup_room() -> Optional[int]:
    """Bytes the process's memory cgroup has left (limit - usage), or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base = f"/sys/fs/cgroup{path}"
            limit, used = _read_first_int(f"{base}/memory.max"), _read_first_int(f"{base}/memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            base = f"/sys/fs/cgroup/memory{path}"
            limit = _read_first_int(f"{base}/memory.limit_in_bytes")
            used = _read_first_int(f"{base}/memory.usage_in_bytes")
        else:
            continue
        if limit is not None and limit < 1 << 60:  # v1 writes "no limit" as a huge number
            return max(limit - (used or 0), 0)
    return None


def _proc_kib(path: str, key: str) -> Optional[int]:
    """A `Key:  N kB` line of a /proc file, in bytes (None off Linux or when the key is absent)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _host_available() -> int:
    """The host's available memory: MemAvailable (page cache that can be dropped counts), else free pages."""
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_memory() -> int:
    """Bytes this process can still take: the least of the host's available memory, its memory cgroup's room
    and its address-space limit (`ulimit -v`) less what it maps already."""
    import resource

    room = [_host_available()]
    cgroup = _cgroup_room()
    if cgroup is not None:
        room.append(cgroup)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        room.append(max(soft - (_proc_kib("/proc/self/status", "VmSize") or 0), 0))
    return min(room)


def matrix_bytes(rows: int, features: int) -> int:
    """Bytes of a float32 feature matrix."""
    return rows * features * 4


def use_external_memory(mode: str, rows: int, features: int, available: Optional[int] = None) -> bool:
    """Whether a fit on `rows` (training + validation) x `features` takes the external-memory path."""
    if mode in ("on", "off"):
        return mode == "on"
    room = available_memory() if available is None else available
    return matrix_bytes(rows, features) > AUTO_MEMORY_FRACTION * room


def read_partition(uri: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One partition: float32 features, the label, the feature names."""
    frame = storage.read_parquet(uri)
    names = [c for c in frame.columns if c != LABEL]
    return frame.select(names).cast(pl.Float32).to_numpy(), frame.get_column(LABEL).to_numpy(), names


def _xgb_iter_base() -> type:
    import xgboost as xgb

    return xgb.DataIter


def partition_iter(uris: list[str], feature_types: list[str], cache_prefix: str, on_host: bool = False) -> Any:
    """An `xgboost.DataIter` over partitions, one per `next()`; `.batches` counts the partitions handed over,
    `.read` lists each partition read (once, in order)."""

    class PartitionIter(_xgb_iter_base()):  # type: ignore[misc]
        def __init__(self) -> None:
            self.uris, self.position, self.batches = list(uris), 0, 0
            self.read: dict[str, None] = {}
            super().__init__(cache_prefix=cache_prefix, release_data=True, on_host=on_host)

        def next(self, input_data: Callable[..., None]) -> bool:
            if self.position == len(self.uris):
                return False
            features, label, names = read_partition(self.uris[self.position])
            input_data(data=features, label=label, feature_names=names, feature_types=feature_types)
            self.read[self.uris[self.position]] = None
            self.position += 1
            self.batches += 1
            return True

        def reset(self) -> None:
            self.position = 0

    return PartitionIter()


@contextmanager
def cache_folder() -> Iterator[str]:
    """A local folder for XGBoost's page cache (`TRAINPIPE_EXTMEM_DIR` or the temp dir), removed afterwards."""
    root = os.environ.get(CACHE_DIR_ENV) or None
    if root:
        os.makedirs(root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="trainpipe-extmem-", dir=root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def external_matrix(
    uris: list[str], feature_types: list[str], max_bin: int, cache_prefix: str,
    ref: Optional[xgb.DMatrix] = None, on_host: bool = False,
) -> tuple[xgb.ExtMemQuantileDMatrix, Any]:
    """An `ExtMemQuantileDMatrix` over the partitions (with `ref`, sharing its bin edges) and its iterator."""
    import xgboost as xgb

    it = partition_iter(uris, feature_types, cache_prefix, on_host=on_host)
    matrix = xgb.ExtMemQuantileDMatrix(it, missing=np.nan, max_bin=max_bin, ref=ref, enable_categorical=True)
    return matrix, it


def partitioned_matrix(uris: list[str], feature_types: list[str], max_bin: int,
                       ref: Optional[xgb.DMatrix] = None) -> xgb.QuantileDMatrix:
    """An in-memory `QuantileDMatrix` over the partitions, read and handed to XGBoost one at a time (with `ref`,
    sharing its bin edges): it holds the quantised bins and one partition, never the whole part as a frame plus
    its float32 copy. For a single partition the booster is byte-identical to one trained from the whole array."""
    import xgboost as xgb

    it = partition_iter(uris, feature_types, None)
    return xgb.QuantileDMatrix(it, missing=np.nan, max_bin=max_bin, ref=ref, enable_categorical=True)


def cache_bytes(folder: str) -> int:
    """Bytes of XGBoost's page cache under a folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def predict_partitions(booster: xgb.Booster, uris: list[str], feature_types: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of a part, scored one partition at a time (never the whole part in memory)."""
    import xgboost as xgb

    labels, preds = [], []
    for uri in uris:
        features, label, names = read_partition(uri)
        matrix = xgb.DMatrix(features, feature_names=names, feature_types=feature_types, enable_categorical=True,
                             missing=np.nan)
        preds.append(booster.predict(matrix))
        labels.append(label)
        del features, matrix
    return np.concatenate(labels), np.concatenate(preds)


def part_partitions(matrices: Matrices, part: str) -> list[str]:
    """A part's partition URIs: as the features stage recorded them, or listed from its folder (a matrix stored
    as one Parquet object is its own single partition)."""
    if matrices.partitions.get(part):
        return matrices.partitions[part]
    uri = matrices.uris[part]
    return [uri] if uri.endswith(".parquet") else partition_uris(uri)


def read_labels(uris: list[str]) -> np.ndarray:
    """The label column of a part's partitions only."""
    return np.concatenate([pl.read_parquet(_local_or_bytes(u), columns=[LABEL]).get_column(LABEL).to_numpy()
                           for u in uris])


def _local_or_bytes(uri: str) -> Any:
    import io

    from fsspec.implementations.local import LocalFileSystem

    fs, path = storage.get_fs(uri)
    return path if isinstance(fs, LocalFileSystem) else io.BytesIO(storage.read_bytes(uri))


# --- bounded-memory data stages ---------------------------------------------------------------------------

# auto: the data stages stream when the source data, as polars holds it, would take more than this share of the
# memory left to the process (measured in memory, above the ~250 MB a run needs at all: 4.3x the estimate at
# 300k x 30 rows, 560 MB peak; 3x at 2M x 30, split 1.7 GB).
DATA_MEMORY_FRACTION = 1 / 5
# Rows a streaming stage holds at once when it works by row slices (split, features, drift's sample).
SLICE_ROWS = 50_000


def source_memory_bytes(files: list[dict[str, Any]]) -> int:
    """About what the inputs take in memory once read: from a Parquet footer its uncompressed column bytes or 8
    bytes a cell, whichever is more; the file size for text formats (compressed text: twice that)."""
    total = 0
    for file in files:
        if file.get("format") == "parquet":
            import pyarrow.parquet as pq
            from pyarrow.lib import ArrowException

            fs, path = storage.get_fs(file["uri"])
            try:
                with storage.guarded(file["uri"]), fs.open(path, "rb") as handle:
                    meta = pq.ParquetFile(handle).metadata
            except (OSError, ValueError, ArrowException):  # not readable as Parquet: ingest says what is wrong
                total += int(file.get("size") or 0)
                continue
            # Uncompressed Parquet understates polars' frame (dictionary-encoded text): at least 8 bytes a cell.
            total += max(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
                         meta.num_rows * meta.num_columns * 8)
        else:
            compressed = file["uri"].lower().endswith((".gz", ".zst", ".bz2"))
            total += int(file.get("size") or 0) * (2 if compressed else 1)
    return total


def plan_memory(mode: str, files: list[dict[str, Any]], available: Optional[int] = None) -> dict[str, Any]:
    """Whether this run's data stages (and its fit) work out of core, decided once before ingest: `on`/`off` as
    the spec says, `auto` from the inputs' in-memory size against the memory left to the process."""
    estimate = source_memory_bytes(files)
    if mode in ("on", "off"):
        return {"mode": mode, "out_of_core": mode == "on", "data_bytes": estimate, "available_bytes": None,
                "reason": f"compute.external_memory: {mode}"}
    room = available_memory() if available is None else available
    out = estimate > DATA_MEMORY_FRACTION * room
    share = f"{estimate / 1e6:.0f} MB of data {'>' if out else '<='} {DATA_MEMORY_FRACTION:.2f} x {room / 1e6:.0f} MB"
    return {"mode": mode, "out_of_core": out, "data_bytes": estimate, "available_bytes": room,
            "reason": f"auto: {share} available"}


def scan_uri(uri: str) -> pl.LazyFrame:
    """A lazy scan of one Parquet object in the artifact store (local or remote)."""
    fs, path = storage.get_fs(uri)
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return pl.scan_parquet(path)
    return pl.scan_parquet(uri, storage_options=storage.storage_options(uri) or None)


def parquet_rows(uri: str) -> int:
    """Rows of a Parquet object, from its footer."""
    return int(scan_uri(uri).select(pl.len()).collect().item())


def iter_slices(uri: str, rows: int = SLICE_ROWS, total: Optional[int] = None) -> Iterator[tuple[int, pl.DataFrame]]:
    """(first row, frame) of consecutive row slices of a Parquet object: one slice in memory at a time."""
    total = parquet_rows(uri) if total is None else total
    scan = scan_uri(uri)
    for start in range(0, max(total, 1), rows):
        yield start, scan.slice(start, rows).collect()


def read_columns(uri: str, columns: list[str]) -> pl.DataFrame:
    """Only some columns of a Parquet object."""
    return scan_uri(uri).select(columns).collect()


class ParquetSink:
    """A Parquet object written slice by slice (row groups) to a local temporary file, published to its URI on
    `close()` (atomically locally, by upload otherwise); `sha256` is its bytes' hash."""

    def __init__(self, uri: str) -> None:
        from fsspec.implementations.local import LocalFileSystem

        self.uri, self.rows, self.sha256 = uri, 0, ""
        self._fs, self._path = storage.get_fs(uri)
        self._local = isinstance(self._fs, LocalFileSystem)
        if self._local:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self.tmp = f"{self._path}.tmp-{os.getpid()}-{id(self):x}"
        else:
            handle, self.tmp = tempfile.mkstemp(suffix=".parquet", prefix="trainpipe-sink-")
            os.close(handle)
        self._writer: Any = None

    def write(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += frame.height

    def close(self, empty: Optional[pl.DataFrame] = None) -> str:
        """Finish and publish; `empty` (a zero-row frame of the schema) is written when no slice came."""
        if self._writer is None:
            self.write(empty if empty is not None else pl.DataFrame())
        self._writer.close()
        self.sha256 = storage.file_sha256(self.tmp)
        publish_file(self.tmp, self.uri)
        return self.sha256


def publish_file(local_path: str, uri: str) -> None:
    """Move a finished local file to its URI: a rename in the same folder locally, an upload otherwise."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = storage.get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(local_path, path)
        return
    try:
        with storage.guarded(uri):
            fs.put_file(local_path, path)
    finally:
        os.remove(local_path)


def sink_plan(plan: pl.LazyFrame, uri: str) -> str:
    """Run a lazy plan with polars' streaming engine straight into a Parquet object; returns its sha256."""
    sink = ParquetSink(uri)
    # row groups of one slice: a slice read later decodes its own rows, not a larger group around them
    plan.sink_parquet(sink.tmp, compression="zstd", statistics=True, row_group_size=SLICE_ROWS)
    sink.sha256 = storage.file_sha256(sink.tmp)
    publish_file(sink.tmp, uri)
    return sink.sha256


def sample_positions(total: int, n: int, seed: int = 0) -> np.ndarray:
    """The sorted row positions of a seeded sample of `n` of `total` rows: one choice for a frame in memory
    (`tasks.drift.profile_rows`) and for a file read slice by slice (`sample_rows`), so both take the same rows."""
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def sample_rows(uri: str, total: int, n: int, seed: int = 0) -> pl.DataFrame:
    """A seeded sample of `n` rows (all when fewer), gathered slice by slice in file order."""
    if total <= n:
        return scan_uri(uri).collect()
    chosen = sample_positions(total, n, seed)
    pieces = []
    for start, frame in iter_slices(uri, SLICE_ROWS, total):
        local = chosen[(chosen >= start) & (chosen < start + frame.height)] - start
        pieces.append(frame[local])
    return pl.concat(pieces)
