"""Scoring: load a stored version and score raw rows through its own stored transform.

The one path from a registry version to predictions: evaluate, the gate (the champion),
plots, predict and reproduce all score through `load_version` and `raw_scores`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import polars as pl

from trainpipe import storage
from trainpipe.boosting import load_booster, load_matrix
from trainpipe.errors import DataError, RegistryError
from trainpipe.registry import read_manifest, resolve_version, version_uri
from trainpipe.spec import TaskType
from trainpipe.transform import LABEL, apply_transform

if TYPE_CHECKING:  # xgboost (and the scikit-learn it pulls in) loads only where a model is used
    import xgboost as xgb


def reorder_classes(pred: np.ndarray, task_type: TaskType, theirs: list[Any], ours: list[Any]) -> np.ndarray:
    """Champion probabilities laid out in the challenger's class order."""
    if sorted(map(str, theirs)) != sorted(map(str, ours)):
        raise DataError(f"the champion's classes {theirs} differ from this version's {ours}")
    if task_type == "binary":
        return pred if str(theirs[1]) == str(ours[1]) else 1 - pred
    index = [list(map(str, theirs)).index(str(c)) for c in ours]
    return pred[:, index]



def champion_predictions(champion: dict[str, Any], holdout: pl.DataFrame | Iterable[pl.DataFrame],
                         task_type: TaskType, classes: Optional[list[Any]]) -> np.ndarray:
    """The champion's raw scores for the holdout rows, through its own stored transform. The rows come whole or
    as consecutive slices (scored one at a time: the transform and the booster work row by row)."""
    transform = champion["transform"]
    if transform["target"]["task"] != task_type:
        raise DataError(f"the champion is a {transform['target']['task']} model, this version {task_type}")
    slices = [holdout] if isinstance(holdout, pl.DataFrame) else holdout
    scored = [predict_rows(champion["booster"], transform, rows, "holdout rows") for rows in slices]
    pred = scored[0] if len(scored) == 1 else np.concatenate(scored)
    if task_type == "regression":
        return pred
    return reorder_classes(pred, task_type, transform["target"]["classes"], classes or [])


def load_version(artifacts: str, ref: str) -> dict[str, Any]:
    """A stored version's booster, transform and manifest, checked against the manifest's hashes."""
    name, version = resolve_version(artifacts, ref)
    folder = version_uri(artifacts, name, version)
    manifest = read_manifest(artifacts, name, version)
    loaded: dict[str, bytes] = {}
    for filename in ("model.ubj", "transform.json"):
        data = storage.read_bytes(storage.join(folder, filename))
        if storage.sha256_bytes(data) != manifest["files"].get(filename):
            raise RegistryError(
                f"{storage.join(folder, filename)} does not match its manifest hash: refusing to use it")
        loaded[filename] = data
    booster = load_booster(loaded["model.ubj"])
    return {"name": name, "version": version, "uri": folder, "booster": booster,
            "transform": json.loads(loaded["transform.json"]), "manifest": manifest}


def predict_rows(booster: xgb.Booster, transform: dict[str, Any], frame: pl.DataFrame, source: str) -> np.ndarray:
    """Raw scores (float32, as XGBoost computes them) of raw rows through a version's stored transform."""
    features = apply_transform(frame, transform, source)
    matrix = load_matrix(features.with_columns(pl.lit(0.0).alias(LABEL)), transform["feature_types"])
    return booster.predict(matrix)


def raw_scores(model: dict[str, Any], frame: pl.DataFrame) -> np.ndarray:
    """A loaded version's raw scores of `frame`, as float64 (reproduce compares two models with them)."""
    return np.asarray(predict_rows(model["booster"], model["transform"], frame, "reproduction data"),
                      dtype=np.float64)


def _score_columns(prefix: str, scores: np.ndarray) -> dict[str, np.ndarray]:
    if scores.ndim == 1:
        return {prefix: scores}
    return {f"{prefix}_{i}": scores[:, i] for i in range(scores.shape[1])}


def write_holdout(uri: str, labels: np.ndarray, pred: np.ndarray, baseline: np.ndarray) -> str:
    """Store the holdout's labels, model scores and baseline scores (dtypes kept); returns the file's sha256."""
    columns = {"label": labels, **_score_columns("score", pred), **_score_columns("baseline", baseline)}
    return storage.write_parquet(pl.DataFrame(columns), uri)


def _stacked(frame: pl.DataFrame, prefix: str) -> np.ndarray:
    if prefix in frame.columns:
        return frame.get_column(prefix).to_numpy()
    names = sorted((c for c in frame.columns if c.startswith(prefix + "_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    return np.column_stack([frame.get_column(c).to_numpy() for c in names])


def read_holdout(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, model scores, baseline scores) as `write_holdout` stored them."""
    frame = storage.read_parquet(uri)
    return frame.get_column("label").to_numpy(), _stacked(frame, "score"), _stacked(frame, "baseline")
