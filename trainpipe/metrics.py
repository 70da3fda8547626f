"""Metrics: one implementation of every holdout metric, plain or under row weights (the gate's bootstrap).

`Scorer` prepares one model's scores once (the grouping of tied scores for AUC, per-row losses
otherwise), then returns a metric for any vector of row weights; `compute_metrics` is the same
code with every weight 1, so evaluate, the gate, the card and reproduce can never disagree.
"""

from __future__ import annotations

import numpy as np

from trainpipe.spec import TaskType

# Probabilities are clipped to [EPS, 1 - EPS] before the log of a log loss.
EPS = 1e-15

# Metric name -> whether larger is better; the first one listed per task is the headline metric.
METRICS: dict[str, dict[str, bool]] = {
    "binary": {"auc": True, "logloss": False, "accuracy": True},
    "multiclass": {"mlogloss": False, "accuracy": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
}


class Scorer:
    """One model's holdout metric under row weights: a bootstrap resample is a vector of row counts.

    The scores are ranked (for AUC) and per-row losses computed once, so each call costs a few
    weighted sums instead of a copy of the rows and a fresh sort. Weights left out mean 1 per row.
    """

    def __init__(self, task_type: TaskType, metric: str, labels: np.ndarray, pred: np.ndarray):
        if metric not in METRICS[task_type]:
            raise ValueError(f"{metric!r} is not a {task_type} metric; choose one of {', '.join(METRICS[task_type])}")
        self.metric = metric
        self.labels = np.asarray(labels, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        if metric == "auc":
            # Rows with equal scores share a group; groups are numbered in increasing score order.
            _, self.group = np.unique(pred, return_inverse=True)
            self.n_groups = int(self.group.max()) + 1 if len(pred) else 0
            self.positive = (self.labels == 1).astype(np.float64)
        elif task_type == "binary":
            p = np.clip(pred, EPS, 1 - EPS)
            self.row = (-(self.labels * np.log(p) + (1 - self.labels) * np.log(1 - p)) if metric == "logloss"
                        else ((pred >= 0.5) == (self.labels == 1)).astype(np.float64))
        elif task_type == "multiclass":
            idx = self.labels.astype(int)
            chosen = np.clip(pred[np.arange(len(idx)), idx], EPS, 1.0)
            self.row = -np.log(chosen) if metric == "mlogloss" else (pred.argmax(axis=1) == idx).astype(np.float64)
        else:
            residual = self.labels - pred
            self.row = np.abs(residual) if metric == "mae" else residual**2

    def __call__(self, weights: np.ndarray | None = None) -> float:
        if weights is None:
            weights = np.ones(len(self.labels))
        if self.metric == "auc":
            return self._auc(weights)
        total_weight = np.sum(weights)
        mean = float(np.sum(weights * self.row) / total_weight)
        if self.metric == "rmse":
            return float(np.sqrt(mean))
        if self.metric == "r2":
            centre = np.sum(weights * self.labels) / total_weight
            total = float(np.sum(weights * (self.labels - centre) ** 2))
            return float(1 - np.sum(weights * self.row) / total) if total > 0 else float("nan")
        return mean

    def _auc(self, weights: np.ndarray) -> float:
        """Weighted Mann-Whitney statistic: the share of (positive, negative) pairs ranked right, ties half;
        NaN when one class has no weight."""
        pos = np.bincount(self.group, weights=weights * self.positive, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=weights * (1 - self.positive), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negatives scored strictly lower than the group
        return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))


def compute_metrics(task_type: TaskType, labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task on the holdout rows, each row counted once."""
    return {metric: Scorer(task_type, metric, labels, pred)() for metric in METRICS[task_type]}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ties count half, 0.5 for a constant score, NaN when a class is absent."""
    return Scorer("binary", "auc", labels, scores)()


def baseline_predictions(task_type: TaskType, train_labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """The trivial model: class shares of the training part, or its mean."""
    if task_type == "regression":
        return np.full(n, float(train_labels.mean()))
    shares = np.bincount(train_labels.astype(int), minlength=n_classes) / len(train_labels)
    if task_type == "binary":
        return np.full(n, shares[1])
    return np.tile(shares, (n, 1))
