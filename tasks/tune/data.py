"""The trials' data: train/valid matrices read once, and the seeded sample of training rows trials use."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import numpy as np
import xgboost as xgb

from tasks.tune.sampler import derived_seed
from trainpipe.matrices import read_matrix
from trainpipe.results import Matrices
from trainpipe.transform import LABEL


class MatrixPool:
    """Train/valid DMatrix pairs for concurrent trials: each trial takes a pair and gives it back.

    XGBoost keeps its histogram index in a DMatrix, so a pair reused by the next trial is not
    sketched again; a pair is never used by two trials at once.
    """

    def __init__(self, matrices: Matrices, trial_rows: Optional[int] = None, seed: int = 0):
        self._arrays = {part: _arrays(read_matrix(matrices.uris[part])) for part in ("train", "valid")}
        self.train_rows = len(self._arrays["train"][1])
        if trial_rows is not None and self.train_rows > trial_rows:
            self._arrays["train"] = _sample(self._arrays["train"], trial_rows, derived_seed(seed, "trial_rows"))
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


def _arrays(frame: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    features = frame.drop(LABEL)
    return features.to_numpy().astype(np.float32), frame.get_column(LABEL).to_numpy(), features.columns


def _sample(arrays: tuple[np.ndarray, np.ndarray, list[str]], rows: int,
            seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`rows` of the arrays' rows, drawn without replacement by `seed`, in their original order."""
    features, labels, names = arrays
    keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=rows, replace=False))
    return features[keep], labels[keep], names
