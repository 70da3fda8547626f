"""Train: an XGBoost `hist` booster with early stopping on the validation part."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Optional

import numpy as np
import polars as pl
import xgboost as xgb

from tasks.common import cached_stage, current_stage_dir, finish_stage
from tasks.features import LABEL
from trainpipe import storage
from trainpipe.errors import SpecError
from trainpipe.spec import TaskType, XGBoostSpec

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


def fit_booster(
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
) -> tuple[xgb.Booster, dict[str, Any]]:
    """Fit with early stopping; the booster returned is cut at its best iteration."""
    history: dict[str, Any] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
    )
    best = getattr(booster, "best_iteration", None)
    rounds = booster.num_boosted_rounds()
    if best is not None and best + 1 < rounds:
        booster = booster[: best + 1]
    curve = history["valid"][params["eval_metric"]]
    info = {
        "rounds_trained": rounds,
        "best_iteration": int(best) if best is not None else rounds - 1,
        "best_validation_score": float(min(curve) if params["eval_metric"] != "auc" else max(curve)),
        "validation_metric": params["eval_metric"],
    }
    return booster, info


def refit_booster(
    train: pl.DataFrame, valid: pl.DataFrame, feature_types: list[str], params: dict[str, Any], rounds: int
) -> xgb.Booster:
    """Refit on training + validation rows for the number of rounds early stopping chose."""
    stacked = load_matrix(pl.concat([train, valid]), feature_types)
    return xgb.train(params, stacked, num_boost_round=rounds, verbose_eval=False)


def model_bytes(booster: xgb.Booster) -> bytes:
    """The model in XGBoost's UBJSON format (never pickle)."""
    return bytes(booster.save_raw(raw_format="ubj"))


@cached_stage("train")
def train_task(
    matrices: dict[str, Any],
    task_type: TaskType,
    n_classes: Optional[int],
    xgboost: XGBoostSpec,
    seed: int,
    artifacts: str,
    tuning: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """`tuning` (the tuning subflow's result, keyed by its fingerprint) is recorded with the model."""
    started = time.perf_counter()
    folder = current_stage_dir("train")
    params = booster_params(xgboost, task_type, n_classes, seed)
    types = matrices["feature_types"]
    train = storage.read_parquet(matrices["uris"]["train"])
    valid = storage.read_parquet(matrices["uris"]["valid"])
    booster, info = fit_booster(load_matrix(train, types), load_matrix(valid, types), params,
                                xgboost.num_boost_round, xgboost.early_stopping_rounds)
    info["refit_on_train_and_valid"] = xgboost.refit
    if xgboost.refit:
        booster = refit_booster(train, valid, types, params, info["best_iteration"] + 1)
    data = model_bytes(booster)
    model_uri = storage.join(folder, "model.ubj")
    storage.write_bytes(model_uri, data)
    meta = {"model_uri": model_uri, "model_sha256": storage.sha256_bytes(data), "params": params, **info}
    if tuning:
        meta.update(tuning=tuning["summary"], attachments=tuning["attachments"])
    return finish_stage(folder, meta, started, content=[meta["model_sha256"]])
