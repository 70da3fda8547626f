"""Plots: curve points of the new model's holdout predictions (ROC, precision-recall, calibration, or
residuals and predicted-vs-actual), small enough for a task result; the card draws them."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from prefect import task

from tasks.common import TRANSIENT_RETRIES
from trainpipe.results import Evaluation
from trainpipe.scoring import read_holdout
from trainpipe.spec import TaskType

MAX_POINTS = 400



def _thin(xs: np.ndarray, ys: np.ndarray, limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    if len(xs) > limit:
        keep = np.unique(np.linspace(0, len(xs) - 1, limit).astype(int))
        xs, ys = xs[keep], ys[keep]
    return [round(float(x), 5) for x in xs], [round(float(y), 5) for y in ys]



def roc_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order]
    tps, fps = np.cumsum(y), np.cumsum(1 - y)
    pos, neg = max(tps[-1], 1), max(fps[-1], 1)
    fpr, tpr = np.concatenate(([0.0], fps / neg)), np.concatenate(([0.0], tps / pos))
    xs, ys = _thin(fpr, tpr)
    return {"x": xs, "y": ys}



def pr_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order]
    tps = np.cumsum(y)
    precision = tps / np.arange(1, len(y) + 1)
    recall = tps / max(tps[-1], 1)
    xs, ys = _thin(recall, precision)
    return {"x": xs, "y": ys}



def calibration_points(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted probability vs observed share of positives, per probability decile bin."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        rows = index == b
        if rows.any():
            xs.append(round(float(scores[rows].mean()), 5))
            ys.append(round(float(labels[rows].mean()), 5))
            ns.append(int(rows.sum()))
    return {"x": xs, "y": ys, "n": ns}



def plot_data(task_type: str, labels: np.ndarray, pred: np.ndarray, classes: Optional[list[Any]]) -> dict[str, Any]:
    """Curve points of the holdout predictions, small enough for a manifest or a task result."""
    if task_type == "regression":
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(len(labels), size=min(len(labels), MAX_POINTS), replace=False))
        return {"kind": "regression",
                "predicted_vs_actual": {"x": [round(float(v), 5) for v in labels[rows]],
                                        "y": [round(float(v), 5) for v in pred[rows]]},
                "residuals": {"x": [round(float(v), 5) for v in pred[rows]],
                              "y": [round(float(v), 5) for v in (labels - pred)[rows]]}}
    if task_type == "binary":
        y = (labels == 1).astype(float)
        curves = {str(classes[1]) if classes else "positive": (y, pred)}
    else:
        curves = {str(c): ((labels == i).astype(float), pred[:, i]) for i, c in enumerate(classes or [])}
    return {"kind": "classification",
            "roc": {c: roc_points(y, s) for c, (y, s) in curves.items()},
            "pr": {c: pr_points(y, s) for c, (y, s) in curves.items()},
            "calibration": {c: calibration_points(y, s) for c, (y, s) in curves.items()}}



@task(name="plots", **TRANSIENT_RETRIES)
def plots_task(evaluation: Evaluation, task_type: TaskType, classes: Optional[list[Any]]) -> dict[str, Any]:
    """Curve points of the new model's holdout scores (made once, by evaluate), for the card."""
    labels, pred, _ = read_holdout(evaluation.holdout_uri)
    return plot_data(task_type, labels, pred, classes)
