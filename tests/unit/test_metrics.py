"""trainpipe.metrics: every metric, plain and under row weights, against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from trainpipe.metrics import EPS, METRICS, Scorer, baseline_predictions, compute_metrics, roc_auc

ALL_METRICS = [(task, metric) for task, metrics in METRICS.items() for metric in metrics]


def noisy_scores(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(labels * 0.6 + 0.2 + rng.normal(scale=noise, size=len(labels)), 0.01, 0.99)


def random_task(task: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions with ties: binary scores rounded to one decimal (exact 0 and 1 among them),
    multiclass probabilities rounded to two (tied argmax), regression values rounded to one."""
    rng = np.random.default_rng(seed)
    if task == "binary":
        labels = rng.integers(0, 2, n).astype(float)
        return labels, np.round(np.clip(0.3 * labels + rng.random(n) * 0.8 - 0.05, 0, 1), 1)
    if task == "multiclass":
        labels = rng.integers(0, 3, n).astype(float)
        prob = np.round(rng.dirichlet([1, 1, 1], n), 2)
        prob = np.clip(prob, 0.01, None)
        return labels, prob / prob.sum(axis=1, keepdims=True)
    labels = np.round(rng.normal(size=n), 1)
    return labels, np.round(labels + rng.normal(scale=0.7, size=n), 1)


def sklearn_metric(task: str, metric: str, labels: np.ndarray, pred: np.ndarray,
                   weights: np.ndarray | None = None) -> float:
    """The reference value; log losses get probabilities clipped at EPS (scikit-learn clips at machine epsilon)."""
    w = {"sample_weight": weights}
    if metric == "auc":
        return roc_auc_score(labels, pred, **w)
    if metric == "logloss":
        return log_loss(labels, np.clip(pred, EPS, 1 - EPS), labels=[0, 1], **w)
    if metric == "mlogloss":
        return log_loss(labels, pred, labels=[0, 1, 2], **w)
    if metric == "accuracy":
        return accuracy_score(labels, pred.argmax(axis=1) if task == "multiclass" else pred >= 0.5, **w)
    if metric == "rmse":
        return math.sqrt(mean_squared_error(labels, pred, **w))
    if metric == "mae":
        return mean_absolute_error(labels, pred, **w)
    assert metric == "r2"
    return r2_score(labels, pred, **w)


def same(a: float, b: float) -> bool:
    """Bit-for-bit equal, NaN equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


# --- hand-computed values and edge cases ---

def test_roc_auc_hand_computed():
    # pairs (neg, pos): (0.1, 0.35) ok, (0.1, 0.8) ok, (0.4, 0.35) wrong, (0.4, 0.8) ok -> 3/4
    assert roc_auc(np.array([0, 0, 1, 1.0]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    # a tie counts half
    assert roc_auc(np.array([0, 1.0]), np.array([0.3, 0.3])) == 0.5
    assert roc_auc(np.array([1, 0, 1, 0.0]), np.array([0.9, 0.1, 0.9, 0.9])) == pytest.approx(0.75)


def test_roc_auc_single_class_is_nan():
    assert math.isnan(roc_auc(np.array([1, 1.0]), np.array([0.1, 0.2])))


def test_roc_auc_of_a_constant_score_is_one_half():
    assert roc_auc(np.array([0, 1, 1, 0, 1.0]), np.full(5, 0.4)) == 0.5


def test_weighted_auc_is_nan_when_one_class_has_no_weight():
    labels, scores = np.array([0, 1, 0, 1.0]), np.array([0.2, 0.7, 0.4, 0.9])
    scorer = Scorer("binary", "auc", labels, scores)
    assert math.isnan(scorer(np.array([1.0, 0.0, 2.0, 0.0])))  # a resample that drew no positive
    assert scorer(np.array([1.0, 0.0, 1.0, 1.0])) == 1.0


def test_binary_logloss_hand_computed():
    metrics = compute_metrics("binary", np.array([1.0, 0.0]), np.array([0.8, 0.4]))
    assert metrics["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert metrics["accuracy"] == 1.0
    assert metrics["auc"] == 1.0


def test_logloss_clips_certain_mistakes_at_eps():
    binary = compute_metrics("binary", np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    # the certain 1 becomes 1 - EPS, whose complement is EPS up to rounding
    assert binary["logloss"] == pytest.approx(-(math.log(EPS) + math.log(1 - (1 - EPS))) / 2)
    assert binary["logloss"] == pytest.approx(-math.log(EPS), rel=1e-4)
    multi = compute_metrics("multiclass", np.array([0.0, 1.0]), np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert multi["mlogloss"] == pytest.approx(-math.log(EPS) / 2)


def test_regression_r2_of_constant_labels_is_nan():
    metrics = compute_metrics("regression", np.ones(3), np.ones(3))
    assert metrics["rmse"] == 0.0
    assert math.isnan(metrics["r2"])
    assert math.isnan(Scorer("regression", "r2", np.ones(3), np.zeros(3))(np.array([0.5, 2.0, 1.0])))


def test_compute_metrics_dispatches_per_task():
    assert set(compute_metrics("binary", np.array([0, 1.0]), np.array([0.2, 0.7]))) == {"auc", "logloss", "accuracy"}
    assert set(compute_metrics("multiclass", np.array([0, 1.0]), np.eye(2))) == {"mlogloss", "accuracy"}
    assert set(compute_metrics("regression", np.array([0, 1.0]), np.array([0, 1.0]))) == {"rmse", "mae", "r2"}


def test_scorer_refuses_a_metric_of_another_task():
    with pytest.raises(ValueError, match="'rmse' is not a binary metric"):
        Scorer("binary", "rmse", np.array([0, 1.0]), np.array([0.2, 0.7]))


# --- against scikit-learn, plain and weighted ---

def test_binary_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60).astype(float)
    prob = np.round(rng.random(60), 1)  # rounded: many ties, some exact 0 and 1
    metrics = compute_metrics("binary", labels, prob)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, prob))
    assert metrics["logloss"] == pytest.approx(log_loss(labels, np.clip(prob, 1e-15, 1 - 1e-15)))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, prob >= 0.5))


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 50)
    prob = rng.dirichlet([1, 1, 1], 50)
    metrics = compute_metrics("multiclass", labels.astype(float), prob)
    assert metrics["mlogloss"] == pytest.approx(log_loss(labels, prob, labels=[0, 1, 2]))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, prob.argmax(axis=1)))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=40)
    pred = labels + rng.normal(size=40)
    metrics = compute_metrics("regression", labels, pred)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(labels, pred)))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(labels, pred))
    assert metrics["r2"] == pytest.approx(r2_score(labels, pred))


@pytest.mark.parametrize(("task", "metric"), ALL_METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_metric_matches_sklearn(task, metric, seed):
    labels, pred = random_task(task, 200, seed)
    assert compute_metrics(task, labels, pred)[metric] == pytest.approx(sklearn_metric(task, metric, labels, pred))


@pytest.mark.parametrize(("task", "metric"), ALL_METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_weights_are_repeated_rows(task, metric, seed):
    labels, pred = random_task(task, 200, seed)
    counts = np.random.default_rng(seed + 10).integers(0, 4, len(labels))  # zeros too: rows left out
    repeated_labels, repeated_pred = np.repeat(labels, counts), np.repeat(pred, counts, axis=0)
    weighted = Scorer(task, metric, labels, pred)(counts.astype(np.float64))
    assert weighted == pytest.approx(compute_metrics(task, repeated_labels, repeated_pred)[metric])
    assert weighted == pytest.approx(sklearn_metric(task, metric, repeated_labels, repeated_pred))


@pytest.mark.parametrize(("task", "metric"), ALL_METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fractional_weights_match_sklearn_sample_weight(task, metric, seed):
    labels, pred = random_task(task, 200, seed)
    weights = np.random.default_rng(seed + 20).uniform(0.05, 3.0, len(labels))
    assert Scorer(task, metric, labels, pred)(weights) == pytest.approx(
        sklearn_metric(task, metric, labels, pred, weights))


@pytest.mark.parametrize(("task", "metric"), ALL_METRICS)
def test_compute_metrics_is_the_scorer_with_unit_weights(task, metric):
    for seed in range(3):
        labels, pred = random_task(task, 150, seed)
        scorer = Scorer(task, metric, labels, pred)
        plain = compute_metrics(task, labels, pred)[metric]
        assert same(plain, scorer(np.ones(len(labels))))
        assert same(plain, scorer())
    constant = np.full(4, 2.0) if task == "regression" else np.zeros(4)  # NaN r2 / NaN AUC: still the same
    prediction = np.full((4, 3), 1 / 3) if task == "multiclass" else np.full(4, 0.3)
    assert same(compute_metrics(task, constant, prediction)[metric], Scorer(task, metric, constant, prediction)(np.ones(4)))


@pytest.mark.parametrize(("task", "metric"), ALL_METRICS)
def test_weighted_scorer_matches_evaluate_and_resampling(task, metric):
    rng = np.random.default_rng(4)
    n = 300
    if task == "binary":
        labels = rng.integers(0, 2, n).astype(float)
        pred = np.round(noisy_scores(labels, 0.4, 7), 2)  # rounded: ties across classes
    elif task == "multiclass":
        labels = rng.integers(0, 3, n).astype(float)
        pred = rng.dirichlet([1, 1, 1], n)
    else:
        labels = rng.normal(size=n)
        pred = labels + rng.normal(scale=0.5, size=n)
    scorer = Scorer(task, metric, labels, pred)
    assert scorer(np.ones(n)) == pytest.approx(compute_metrics(task, labels, pred)[metric])
    rows = rng.integers(0, n, n)  # weights = row counts of a resample: same value as the resampled rows
    counts = np.bincount(rows, minlength=n).astype(float)
    assert scorer(counts) == pytest.approx(compute_metrics(task, labels[rows], pred[rows])[metric])


# --- the trivial baseline ---

def test_baseline_predictions():
    assert baseline_predictions("binary", np.array([0, 0, 1, 1, 1.0]), 2, 2).tolist() == [0.6, 0.6]
    multi = baseline_predictions("multiclass", np.array([0, 0, 1, 2.0]), 2, 4)
    assert multi.tolist() == [[0.5, 0.25, 0.25, 0.0]] * 2
    assert baseline_predictions("regression", np.array([1.0, 2.0, 6.0]), 3, 0).tolist() == [3.0] * 3


def test_baseline_metrics_are_those_of_the_trivial_model():
    train_labels = np.array([0, 0, 0, 1.0])
    test_labels = np.array([0, 1.0])
    metrics = compute_metrics("binary", test_labels, baseline_predictions("binary", train_labels, 2, 2))
    assert metrics["auc"] == 0.5
    assert metrics["logloss"] == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
    assert metrics["accuracy"] == 0.5


def test_linearised_auc_is_exact_with_unit_weights_and_close_under_resampling_weights():
    rng = np.random.default_rng(5)
    labels = (rng.random(4000) < 0.4).astype(float)
    scores = np.round(labels * 0.3 + rng.random(4000) * 0.7, 2)  # rounded: many ties
    exact, linear = Scorer("binary", "auc", labels, scores), Scorer("binary", "auc", labels, scores, linear=True)
    assert linear() == pytest.approx(exact(), abs=1e-12)
    weights = np.stack([np.bincount(rng.integers(0, 4000, 4000), minlength=4000) for _ in range(20)]).astype(float)
    assert np.max(np.abs(linear(weights) - exact(weights))) < 2e-3
    assert exact(weights).shape == (20,)
    assert np.allclose(exact(weights), [exact(w) for w in weights])  # a batch equals one call per resample
