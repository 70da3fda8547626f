"""Evaluate: holdout metrics of the model and of a trivial baseline, and feature importance."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb
from prefect import task
from prefect.artifacts import create_table_artifact

from trainpipe import storage
from trainpipe.boosting import load_matrix
from trainpipe.metrics import METRICS, baseline_predictions, compute_metrics
from trainpipe.spec import TaskType
from trainpipe.transform import LABEL


def feature_importance(booster: xgb.Booster, features: list[str]) -> list[dict[str, Any]]:
    """Total gain and split count per feature, most important first (unused features score 0)."""
    gain = booster.get_score(importance_type="total_gain")
    weight = booster.get_score(importance_type="weight")
    total = sum(gain.values()) or 1.0
    rows = [
        {"feature": f, "gain": float(gain.get(f, 0.0)), "gain_share": float(gain.get(f, 0.0) / total),
         "splits": int(weight.get(f, 0))}
        for f in features
    ]
    return sorted(rows, key=lambda r: (-r["gain"], r["feature"]))


def evaluate_model(
    booster: xgb.Booster, test: pl.DataFrame, train_labels: np.ndarray, task_type: TaskType,
    n_classes: int, feature_types: list[str],
) -> dict[str, Any]:
    """Metrics of the model and of the baseline on the test part, plus feature importance."""
    labels = test.get_column(LABEL).to_numpy()
    pred = booster.predict(load_matrix(test, feature_types))
    baseline = baseline_predictions(task_type, train_labels, len(labels), n_classes)
    features = [c for c in test.columns if c != LABEL]
    return {
        "metrics": compute_metrics(task_type, labels, pred),
        "baseline_metrics": compute_metrics(task_type, labels, baseline),
        "headline_metric": next(iter(METRICS[task_type])),
        "test_rows": len(labels),
        "importance": feature_importance(booster, features),
    }


def metric_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"metric": name, "model": round(value, 6), "baseline": round(result["baseline_metrics"][name], 6)}
        for name, value in result["metrics"].items()
    ]


@task(name="evaluate")
def evaluate_task(matrices: dict[str, Any], model: dict[str, Any], task_type: TaskType,
                  n_classes: int) -> dict[str, Any]:
    started = time.perf_counter()
    booster = xgb.Booster(model_file=bytearray(storage.read_bytes(model["model_uri"])))
    train_labels = storage.read_parquet(matrices["uris"]["train"]).get_column(LABEL).to_numpy()
    result = evaluate_model(booster, storage.read_parquet(matrices["uris"]["test"]), train_labels, task_type,
                            n_classes, matrices["feature_types"])
    create_table_artifact(key="metrics", table=metric_rows(result),
                          description=f"holdout metrics on {result['test_rows']} rows, against the trivial baseline")
    return {**result, "seconds": round(time.perf_counter() - started, 3)}
