"""Feature matrices in the artifact store as folders of Parquet partitions of bounded rows.

One part (train, valid or test) of the features stage is a folder `<stage dir>/<part>/` holding
`part-00000.parquet`, `part-00001.parquet`, ...: each at most `rows_per_partition` rows, in row order,
all with the same schema (the feature columns as written by the transform, then the encoded label).
A part always has at least one partition (an empty part: one partition of zero rows). The local engine
reads a part whole; Dask workers (and out-of-core readers) read the partitions one by one from the same URIs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import polars as pl

from trainpipe import storage

PARTITION_NAME = "part-{index:05d}.parquet"


def partition_name(index: int) -> str:
    return PARTITION_NAME.format(index=index)


def write_matrix(frame: pl.DataFrame, folder: str, rows_per_partition: int,
                 apply: Optional[Callable[[pl.DataFrame], pl.DataFrame]] = None) -> tuple[list[str], list[str]]:
    """Write `frame` as partitions of at most `rows_per_partition` rows under `folder`; returns (URIs, sha256s).

    With `apply` (a row-wise transform, such as the fitted feature transform), each slice of `frame` is
    transformed on its own before it is written, so the transformed part never exists whole in memory.
    """
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be at least 1, got {rows_per_partition}")
    uris, digests = [], []
    for index, start in enumerate(range(0, max(frame.height, 1), rows_per_partition)):
        uri = storage.join(folder, partition_name(index))
        rows = frame.slice(start, rows_per_partition)
        digests.append(storage.write_parquet(apply(rows) if apply is not None else rows, uri))
        uris.append(uri)
    return uris, digests


def partition_uris(folder: str) -> list[str]:
    """The partition URIs of a part's folder, in row order (listed from the store)."""
    names = [n for n in storage.list_dir(folder) if n.startswith("part-") and n.endswith(".parquet")]
    return [storage.join(folder, n) for n in sorted(names)]


def read_matrix(uri: str) -> pl.DataFrame:
    """A whole part as one frame: a partition folder (concatenated in order) or a single Parquet object."""
    if uri.endswith(".parquet"):  # a matrix written before partitions, or one partition
        return storage.read_parquet(uri)
    uris = partition_uris(uri)
    if not uris:
        raise FileNotFoundError(f"no partitions (part-*.parquet) under {uri}")
    frames = [storage.read_parquet(u) for u in uris]
    return frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=True)
