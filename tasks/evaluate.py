"""Evaluate: holdout metrics of the model and of a trivial baseline, and feature importance."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb
from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.features import LABEL
from tasks.train import load_matrix
from trainpipe import storage
from trainpipe.spec import TaskType

EPS = 1e-15

# Metric name -> whether larger is better; the first one listed per task is the headline metric.
METRICS: dict[str, dict[str, bool]] = {
    "binary": {"auc": True, "logloss": False, "accuracy": True},
    "multiclass": {"mlogloss": False, "accuracy": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); 0.5 for a constant score."""
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    p = np.clip(prob, EPS, 1 - EPS)
    return {
        "auc": roc_auc(labels, prob),
        "logloss": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))),
        "accuracy": float(np.mean((prob >= 0.5) == (labels == 1))),
    }


def multiclass_metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    idx = labels.astype(int)
    p = np.clip(prob[np.arange(len(idx)), idx], EPS, 1.0)
    return {"mlogloss": float(-np.mean(np.log(p))), "accuracy": float(np.mean(prob.argmax(axis=1) == idx))}


def regression_metrics(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    residual = labels - pred
    total = float(np.sum((labels - labels.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": float(1 - np.sum(residual**2) / total) if total > 0 else float("nan"),
    }


def compute_metrics(task_type: TaskType, labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if task_type == "binary":
        return binary_metrics(labels, pred)
    if task_type == "multiclass":
        return multiclass_metrics(labels, pred)
    return regression_metrics(labels, pred)


def baseline_predictions(task_type: TaskType, train_labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """The trivial model: class shares of the training part, or its mean."""
    if task_type == "regression":
        return np.full(n, float(train_labels.mean()))
    shares = np.bincount(train_labels.astype(int), minlength=n_classes) / len(train_labels)
    if task_type == "binary":
        return np.full(n, shares[1])
    return np.tile(shares, (n, 1))


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
