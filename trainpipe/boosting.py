"""XGBoost plumbing shared by training, tuning and scoring: parameters, matrices, model bytes."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import polars as pl

from trainpipe.errors import SpecError
from trainpipe.spec import TaskType, XGBoostSpec
from trainpipe.transform import LABEL

if TYPE_CHECKING:  # xgboost (and the scikit-learn it pulls in) loads only where a model is used
    import xgboost as xgb

OBJECTIVES: dict[str, tuple[str, str]] = {
    "binary": ("binary:logistic", "logloss"),
    "multiclass": ("multi:softprob", "mlogloss"),
    "regression": ("reg:squarederror", "rmse"),
}



def cuda_visible() -> bool:
    """Whether this XGBoost build can use a GPU here (XGBoost itself only warns and falls back)."""
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")) or shutil.which("nvidia-smi") is not None



# Training parts with at least this many rows, or this many features, get XGBoost's own learning rate and no
# refit by default.
LARGE_TRAIN_ROWS = 100_000
WIDE_FEATURES = 1_000
SMALL_DATA_LEARNING_RATE, LARGE_DATA_LEARNING_RATE = 0.1, 0.3


def sized_defaults(spec: XGBoostSpec, train_rows: int, features: int = 0) -> XGBoostSpec:
    """The spec with the size-dependent defaults (learning rate, refit) filled in for a training part this big.

    On small data a lower learning rate and a refit on training + validation rows buy a better model for
    seconds; from `LARGE_TRAIN_ROWS` rows on they would cost 3-4x the training time for a few thousandths of
    holdout score (nycflights13, 327k rows: AUC 0.9550 at 0.3 without refit in 5.4 s, 0.9580 at 0.1 with refit
    in 42.8 s), so the defaults become XGBoost's own. A round's cost grows with the features too, whatever the
    rows: from `WIDE_FEATURES` features the same holds (300 rows x 3,000 columns: train stage 26 s at 0.1 with
    refit against 4.6 s for a whole bare script at XGBoost's defaults). Values the spec sets are kept.
    """
    large = train_rows >= LARGE_TRAIN_ROWS or features >= WIDE_FEATURES
    updates: dict[str, Any] = {}
    if spec.learning_rate is None:
        updates["learning_rate"] = LARGE_DATA_LEARNING_RATE if large else SMALL_DATA_LEARNING_RATE
    if spec.refit is None:
        updates["refit"] = not large
    return spec.model_copy(update=updates) if updates else spec


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
        "learning_rate": spec.learning_rate or SMALL_DATA_LEARNING_RATE,
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



def feature_array(frame: pl.DataFrame) -> np.ndarray:
    """The feature columns of a features-stage frame as one float32 array (one copy; no float64 detour)."""
    return frame.drop(LABEL, strict=False).cast(pl.Float32).to_numpy()


def load_matrix(frame: pl.DataFrame, feature_types: list[str]) -> xgb.DMatrix:
    """A DMatrix from a features-stage frame (feature columns plus the label)."""
    import xgboost as xgb

    return xgb.DMatrix(
        feature_array(frame),
        label=frame.get_column(LABEL).to_numpy(),
        feature_names=[c for c in frame.columns if c != LABEL],
        feature_types=feature_types,
        enable_categorical=True,
        missing=np.nan,
    )


def training_matrix(
    frame: pl.DataFrame, feature_types: list[str], max_bin: int, ref: Optional[xgb.QuantileDMatrix] = None
) -> xgb.QuantileDMatrix:
    """A QuantileDMatrix for `hist` training: the histogram bins only, not a second copy of the values.

    A validation matrix passes the training one as `ref`, so both share its bin edges.
    """
    import xgboost as xgb

    return xgb.QuantileDMatrix(
        feature_array(frame),
        label=frame.get_column(LABEL).to_numpy(),
        feature_names=[c for c in frame.columns if c != LABEL],
        feature_types=feature_types,
        enable_categorical=True,
        missing=np.nan,
        max_bin=max_bin,
        ref=ref,
    )



def model_bytes(booster: xgb.Booster) -> bytes:
    """The model in XGBoost's UBJSON format (never pickle)."""
    return bytes(booster.save_raw(raw_format="ubj"))


def load_booster(data: bytes) -> xgb.Booster:
    """A booster from XGBoost's own model bytes (UBJSON or JSON; never pickle)."""
    import xgboost as xgb

    return xgb.Booster(model_file=bytearray(data))
