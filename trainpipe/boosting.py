"""XGBoost plumbing shared by training, tuning and scoring: parameters, matrices, model bytes."""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

import numpy as np
import polars as pl
import xgboost as xgb

from trainpipe.errors import SpecError
from trainpipe.spec import TaskType, XGBoostSpec
from trainpipe.transform import LABEL

OBJECTIVES: dict[str, tuple[str, str]] = {
    "binary": ("binary:logistic", "logloss"),
    "multiclass": ("multi:softprob", "mlogloss"),
    "regression": ("reg:squarederror", "rmse"),
}



def cuda_visible() -> bool:
    """Whether this XGBoost build can use a GPU here (XGBoost itself only warns and falls back)."""
    if not xgb.build_info().get("USE_CUDA"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")) or shutil.which("nvidia-smi") is not None



def booster_params(spec: XGBoostSpec, task_type: TaskType, n_classes: Optional[int], seed: int) -> dict[str, Any]:
    """XGBoost parameters for the spec and task."""
    if spec.device == "cuda" and not cuda_visible():
        raise SpecError("xgboost.device is 'cuda' but no CUDA device (or no CUDA build of XGBoost) is on this worker")
    objective, metric = OBJECTIVES[task_type]
    params: dict[str, Any] = {
        "objective": objective,
        "eval_metric": metric,
        "tree_method": "hist",
        "device": spec.device,
        "learning_rate": spec.learning_rate,
        "max_depth": spec.max_depth,
        "min_child_weight": spec.min_child_weight,
        "subsample": spec.subsample,
        "colsample_bytree": spec.colsample_bytree,
        "reg_lambda": spec.reg_lambda,
        "reg_alpha": spec.reg_alpha,
        "max_bin": spec.max_bin,
        "seed": seed,
        "nthread": spec.nthread or os.cpu_count() or 1,
        "verbosity": 1,
    }
    if task_type == "multiclass":
        params["num_class"] = n_classes
    params.update(spec.extra_params)
    return params



def load_matrix(frame: pl.DataFrame, feature_types: list[str]) -> xgb.DMatrix:
    """A DMatrix from a features-stage frame (feature columns plus the label)."""
    features = frame.drop(LABEL)
    return xgb.DMatrix(
        features.to_numpy().astype(np.float32),
        label=frame.get_column(LABEL).to_numpy(),
        feature_names=features.columns,
        feature_types=feature_types,
        enable_categorical=True,
        missing=np.nan,
    )



def model_bytes(booster: xgb.Booster) -> bytes:
    """The model in XGBoost's UBJSON format (never pickle)."""
    return bytes(booster.save_raw(raw_format="ubj"))


def load_booster(data: bytes) -> xgb.Booster:
    """A booster from XGBoost's own model bytes (UBJSON or JSON; never pickle)."""
    return xgb.Booster(model_file=bytearray(data))
