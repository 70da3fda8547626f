"""Scoring: load a stored version and score raw rows through its own stored transform.

The one path from a registry version to predictions: evaluate, the gate (the champion),
plots, predict and reproduce all score through `load_version` and `raw_scores`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import polars as pl
import xgboost as xgb

from trainpipe import storage
from trainpipe.boosting import load_matrix
from trainpipe.errors import DataError, RegistryError
from trainpipe.registry import read_manifest, resolve_version, version_uri
from trainpipe.spec import TaskType
from trainpipe.transform import LABEL, apply_transform


def reorder_classes(pred: np.ndarray, task_type: TaskType, theirs: list[Any], ours: list[Any]) -> np.ndarray:
    """Champion probabilities laid out in the challenger's class order."""
    if sorted(map(str, theirs)) != sorted(map(str, ours)):
        raise DataError(f"the champion's classes {theirs} differ from this version's {ours}")
    if task_type == "binary":
        return pred if str(theirs[1]) == str(ours[1]) else 1 - pred
    index = [list(map(str, theirs)).index(str(c)) for c in ours]
    return pred[:, index]



def champion_predictions(champion: dict[str, Any], holdout: pl.DataFrame, task_type: TaskType,
                         classes: Optional[list[Any]]) -> np.ndarray:
    """The champion's raw scores for the holdout rows, through its own stored transform."""
    transform = champion["transform"]
    if transform["target"]["task"] != task_type:
        raise DataError(f"the champion is a {transform['target']['task']} model, this version {task_type}")
    features = apply_transform(holdout, transform, "holdout rows")
    matrix = load_matrix(features.with_columns(pl.lit(0.0).alias(LABEL)), transform["feature_types"])
    pred = champion["booster"].predict(matrix)
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
    booster = xgb.Booster(model_file=bytearray(loaded["model.ubj"]))
    return {"name": name, "version": version, "uri": folder, "booster": booster,
            "transform": json.loads(loaded["transform.json"]), "manifest": manifest}


def raw_scores(model: dict[str, Any], frame: Any) -> np.ndarray:
    import polars as pl

    from trainpipe.boosting import load_matrix
    from trainpipe.transform import LABEL, apply_transform

    features = apply_transform(frame, model["transform"], "reproduction data")
    matrix = load_matrix(features.with_columns(pl.lit(0.0).alias(LABEL)), model["transform"]["feature_types"])
    return np.asarray(model["booster"].predict(matrix), dtype=np.float64)
