"""Evaluate: holdout metrics of the model and of a trivial baseline, and feature importance."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from prefect.artifacts import create_table_artifact

from tasks.common import cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.boosting import load_booster, load_matrix
from trainpipe.metrics import METRICS, baseline_predictions, compute_metrics
from trainpipe.outofcore import part_partitions, predict_partitions, read_labels
from trainpipe.results import Evaluation, FittedModel, Matrices
from trainpipe.scoring import write_holdout
from trainpipe.spec import TaskType
from trainpipe.transform import LABEL

if TYPE_CHECKING:  # xgboost (and the scikit-learn it pulls in) loads only where a model is used
    import xgboost as xgb


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


def holdout_scores(
    booster: xgb.Booster, test: pl.DataFrame, train_labels: np.ndarray, task_type: TaskType,
    n_classes: int, feature_types: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of the test part, the model's scores and the trivial baseline's: the run's one prediction of it."""
    labels = test.get_column(LABEL).to_numpy()
    pred = booster.predict(load_matrix(test, feature_types))
    return labels, pred, baseline_predictions(task_type, train_labels, len(labels), n_classes)


def holdout_report(task_type: TaskType, labels: np.ndarray, pred: np.ndarray, baseline: np.ndarray,
                   importance: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of the model and of the baseline on the holdout, with the feature importance."""
    return {
        "metrics": compute_metrics(task_type, labels, pred),
        "baseline_metrics": compute_metrics(task_type, labels, baseline),
        "headline_metric": next(iter(METRICS[task_type])),
        "test_rows": len(labels),
        "importance": importance,
    }


def evaluate_model(
    booster: xgb.Booster, test: pl.DataFrame, train_labels: np.ndarray, task_type: TaskType,
    n_classes: int, feature_types: list[str],
) -> dict[str, Any]:
    """Metrics of the model and of the baseline on the test part, plus feature importance."""
    labels, pred, baseline = holdout_scores(booster, test, train_labels, task_type, n_classes, feature_types)
    return holdout_report(task_type, labels, pred, baseline,
                          feature_importance(booster, [c for c in test.columns if c != LABEL]))


def metric_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"metric": name, "model": round(value, 6), "baseline": round(result["baseline_metrics"][name], 6)}
        for name, value in result["metrics"].items()
    ]


@cached_stage("evaluate", Evaluation)
def evaluate_task(matrices: Matrices, model: FittedModel, task_type: TaskType, n_classes: int,
                  artifacts: str) -> Evaluation:
    """Score the holdout once; the metrics, the gate and the plots all read these scores."""
    started = time.perf_counter()
    folder = current_stage_dir("evaluate")
    booster = load_booster(storage.read_bytes(model.model_uri))
    # Scored one partition at a time and only the label column of the training part read: the same numbers as
    # scoring the whole part (prediction is row by row), in the memory of one partition.
    labels, pred = predict_partitions(booster, part_partitions(matrices, "test"), matrices.feature_types)
    baseline = baseline_predictions(task_type, read_labels(part_partitions(matrices, "train")), len(labels), n_classes)
    result = holdout_report(task_type, labels, pred, baseline, feature_importance(booster, matrices.features))
    holdout_uri = storage.join(folder, "holdout.parquet")
    digest = write_holdout(holdout_uri, labels, pred, baseline)
    create_table_artifact(key="metrics", table=metric_rows(result),
                          description=f"holdout metrics on {result['test_rows']} rows, against the trivial baseline")
    return finish_stage(folder, Evaluation, {**result, "holdout_uri": holdout_uri}, started,
                        content=[digest, result["metrics"]])
