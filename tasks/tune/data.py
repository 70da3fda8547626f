"""The trials' data: train/valid matrices read once, and the seeded sample of training rows trials use."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import numpy as np
import xgboost as xgb

from tasks.tune.sampler import derived_seed
from trainpipe import storage
from trainpipe.outofcore import parquet_rows, part_partitions, sample_positions
from trainpipe.results import Matrices
from trainpipe.transform import LABEL


class MatrixPool:
    """Train/valid DMatrix pairs for concurrent trials: each trial takes a pair and gives it back.

    XGBoost keeps its histogram index in a DMatrix, so a pair reused by the next trial is not
    sketched again; a pair is never used by two trials at once.
    """

    def __init__(self, matrices: Matrices, trial_rows: Optional[int] = None, seed: int = 0):
        train, valid = part_partitions(matrices, "train"), part_partitions(matrices, "valid")
        self.train_rows = matrices.rows.get("train") or sum(parquet_rows(uri) for uri in train)
        keep = None
        if trial_rows is not None and self.train_rows > trial_rows:
            keep = sample_positions(self.train_rows, trial_rows, derived_seed(seed, "trial_rows"))
        self._arrays = {"train": _arrays(train, keep), "valid": _arrays(valid, None)}
        self.trial_rows = len(self._arrays["train"][1])
        self._types = matrices.feature_types
        self._free: queue.SimpleQueue[tuple[xgb.DMatrix, xgb.DMatrix]] = queue.SimpleQueue()

    def _build(self, part: str) -> xgb.DMatrix:
        features, labels, names = self._arrays[part]
        return xgb.DMatrix(features, label=labels, feature_names=names, feature_types=self._types,
                           enable_categorical=True, missing=np.nan)

    @contextmanager
    def pair(self) -> Iterator[tuple[xgb.DMatrix, xgb.DMatrix]]:
        try:
            taken = self._free.get_nowait()
        except queue.Empty:
            taken = (self._build("train"), self._build("valid"))
        try:
            yield taken
        finally:
            self._free.put(taken)


def _arrays(uris: list[str], keep: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Float32 features, labels and names of a part read one partition at a time; with `keep` (sorted row
    positions of the whole part) only those rows. The peak is the result plus one partition, not the part."""
    features, labels, names, offset = [], [], None, 0
    for uri in uris:
        frame = storage.read_parquet(uri)
        rows = frame.height
        if keep is not None:
            local = keep[(keep >= offset) & (keep < offset + rows)] - offset
            frame = frame[local]
        offset += rows
        names = names or [c for c in frame.columns if c != LABEL]
        features.append(frame.select(names).to_numpy().astype(np.float32, copy=False))
        labels.append(frame.get_column(LABEL).to_numpy())
        del frame
    if names is None:
        raise FileNotFoundError(f"no partitions in {uris}")
    return (features[0] if len(features) == 1 else np.concatenate(features),
            labels[0] if len(labels) == 1 else np.concatenate(labels), names)
