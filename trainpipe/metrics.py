"""Metrics: one implementation of every holdout metric, plain or under row weights (the gate's bootstrap).

`Scorer` prepares one model's scores once (the sort for AUC, per-row losses otherwise), then
returns a metric for any vector of row weights; `compute_metrics` is the same code with
every weight 1, so evaluate, the gate, the card and reproduce can never disagree.
"""

from __future__ import annotations

import numpy as np

from trainpipe.spec import TaskType


class Scorer:
    """One model's holdout metric under row weights: a bootstrap resample is a vector of row counts.

    The rows are sorted (for AUC) and per-row losses computed once, so each resample costs two
    weighted sums instead of a copy of the rows and a fresh ranking.
    """

    def __init__(self, task_type: TaskType, metric: str, labels: np.ndarray, pred: np.ndarray):
        self.metric = metric
        self.labels = labels.astype(np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        if metric == "auc":
            order = np.argsort(pred, kind="mergesort")
            _, groups = np.unique(pred[order], return_inverse=True)
            self.group = np.empty(len(pred), dtype=np.int64)
            self.group[order] = groups
            self.n_groups = int(groups.max()) + 1 if len(groups) else 0
        elif task_type == "binary":
            p = np.clip(pred, EPS, 1 - EPS)
            self.row = (-(self.labels * np.log(p) + (1 - self.labels) * np.log(1 - p)) if metric == "logloss"
                        else ((pred >= 0.5) == (self.labels == 1)).astype(np.float64))
        elif task_type == "multiclass":
            idx = labels.astype(int)
            chosen = np.clip(pred[np.arange(len(idx)), idx], EPS, 1.0)
            self.row = -np.log(chosen) if metric == "mlogloss" else (pred.argmax(axis=1) == idx).astype(np.float64)
        else:
            residual = self.labels - pred
            self.row = np.abs(residual) if metric == "mae" else residual**2

    def __call__(self, weights: np.ndarray) -> float:
        if self.metric == "auc":
            pos = np.bincount(self.group, weights=weights * self.labels, minlength=self.n_groups)
            neg = np.bincount(self.group, weights=weights * (1 - self.labels), minlength=self.n_groups)
            total_pos, total_neg = pos.sum(), neg.sum()
            if total_pos == 0 or total_neg == 0:
                return float("nan")
            below = np.cumsum(neg) - neg  # negatives scored strictly lower; ties count half
            return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))
        mean = float(np.sum(weights * self.row) / np.sum(weights))
        if self.metric == "rmse":
            return float(np.sqrt(mean))
        if self.metric == "r2":
            centre = np.sum(weights * self.labels) / np.sum(weights)
            total = float(np.sum(weights * (self.labels - centre) ** 2))
            return float(1 - np.sum(weights * self.row) / total) if total > 0 else float("nan")
        return mean


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
