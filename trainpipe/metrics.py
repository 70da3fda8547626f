"""Metrics: one implementation of every holdout metric, plain or under row weights (the gate's bootstrap).

`Scorer` prepares one model's scores once (the grouping of tied scores for AUC, per-row losses
otherwise), then returns a metric for any vector of row weights; `compute_metrics` is the same
code with every weight 1, so evaluate, the gate, the card and reproduce can never disagree.
"""

from __future__ import annotations

from typing import Any

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
    weighted sums instead of a copy of the rows and a fresh sort. Weights left out mean 1 per row;
    a 2-D array of weights (one resample per row) gives one metric per resample, in one vectorised pass.
    """

    def __init__(self, task_type: TaskType, metric: str, labels: np.ndarray, pred: np.ndarray, linear: bool = False):
        """`linear`: weighted AUCs use the AUC's first-order (Hoeffding/DeLong) expansion, two weighted means
        of per-row placement values — exact with unit weights, within O(1/n) under resampling weights, and a
        matrix product instead of a sort-order pass per resample (what makes a large holdout's bootstrap cheap)."""
        if metric not in METRICS[task_type]:
            raise ValueError(f"{metric!r} is not a {task_type} metric; choose one of {', '.join(METRICS[task_type])}")
        self.metric = metric
        self.labels = np.asarray(labels, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        if metric == "auc":
            # Rows in increasing score order; rows with equal scores share a group [start, end).
            self.order = np.argsort(pred, kind="stable")
            ranked = pred[self.order]
            _, first, size = np.unique(ranked, return_index=True, return_counts=True)
            group = np.repeat(np.arange(len(first)), size)
            self.start, self.end = first[group], (first + size)[group]
            self.positive = (self.labels[self.order] == 1).astype(np.float64)
            self.linear = linear and len(pred) > 0
            if self.linear:
                self._placements()
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

    def __call__(self, weights: np.ndarray | None = None) -> Any:
        """The metric (a float), or one per row of a 2-D `weights` (an array)."""
        batch = weights is not None and np.ndim(weights) == 2
        w = np.atleast_2d(np.ones(len(self.labels)) if weights is None else np.asarray(weights, dtype=np.float64))
        values = self._auc(w) if self.metric == "auc" else self._mean_based(w)
        return values if batch else float(values[0])

    def influence(self) -> np.ndarray:
        """Per-row influence values of the metric (each row counted once): the metric's first-order change when
        one row's weight grows, so that its sampling variance is about var(influence) / n (for AUC, DeLong's
        placement values; for RMSE and R², the delta method). The gate's normal interval on large holdouts."""
        n = len(self.labels)
        if self.metric == "auc":
            if not hasattr(self, "placement"):
                self._placements()
            pos = self.is_positive
            n_pos, n_neg = pos.sum(), n - pos.sum()
            if not (n_pos and n_neg):
                return np.full(n, np.nan)
            return (self.placement - self.auc_all) * (pos * n / n_pos + (1 - pos) * n / n_neg)
        mean = float(self.row.mean()) if n else float("nan")
        if self.metric == "rmse":
            return (self.row - mean) / (2 * np.sqrt(mean)) if mean > 0 else np.zeros(n)
        if self.metric == "r2":
            spread = (self.labels - self.labels.mean()) ** 2
            variance = float(spread.mean())
            if variance <= 0:
                return np.full(n, np.nan)
            return -(self.row - mean) / variance + mean * (spread - variance) / variance**2
        return self.row - mean

    def _mean_based(self, w: np.ndarray) -> np.ndarray:
        total_weight = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (w @ self.row) / total_weight
            if self.metric == "rmse":
                return np.sqrt(mean)
            if self.metric == "r2":
                centre = (w @ self.labels) / total_weight
                total = (w * (self.labels[None, :] - centre[:, None]) ** 2).sum(axis=1)
                return np.where(total > 0, 1 - (w @ self.row) / np.where(total > 0, total, 1.0), np.nan)
        return mean

    def _placements(self) -> None:
        """Per row (original order): a positive's share of negatives ranked below it, a negative's share of
        positives ranked above it (ties half); and the AUC itself."""
        pos, neg = self.positive, 1 - self.positive
        cum_neg = np.concatenate([[0.0], np.cumsum(neg)])
        cum_pos = np.concatenate([[0.0], np.cumsum(pos)])
        total_pos, total_neg = cum_pos[-1], cum_neg[-1]
        self.auc_all = float(self._exact_auc(np.ones((1, len(pos))))[0]) if total_pos and total_neg else float("nan")
        placement = np.zeros(len(pos))
        if total_pos and total_neg:
            below = cum_neg[self.start] + 0.5 * (cum_neg[self.end] - cum_neg[self.start])
            above = (total_pos - cum_pos[self.end]) + 0.5 * (cum_pos[self.end] - cum_pos[self.start])
            placement = np.where(pos == 1, below / total_neg, above / total_pos)
        unsorted = np.empty_like(placement)
        unsorted[self.order] = placement
        self.placement, self.is_positive = unsorted, np.empty_like(pos)
        self.is_positive[self.order] = pos

    def _auc(self, w: np.ndarray) -> np.ndarray:
        if getattr(self, "linear", False):
            pos_weight, neg_weight = w @ self.is_positive, w @ (1 - self.is_positive)
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = (w @ (self.placement * self.is_positive) / pos_weight
                       + w @ (self.placement * (1 - self.is_positive)) / neg_weight - self.auc_all)
            return np.where((pos_weight > 0) & (neg_weight > 0), auc, np.nan)
        return self._exact_auc(w)

    def _exact_auc(self, w: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney statistic: the share of (positive, negative) pairs ranked right, ties half;
        NaN when one class has no weight."""
        w = w[:, self.order]
        pos, neg = w * self.positive, w * (1 - self.positive)
        cum_neg = np.concatenate([np.zeros((len(w), 1)), np.cumsum(neg, axis=1)], axis=1)
        below = cum_neg[:, self.start]  # negatives scored strictly lower than the row's group
        tied = cum_neg[:, self.end] - below
        total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * tied)).sum(axis=1) / (total_pos * total_neg)
        return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


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
