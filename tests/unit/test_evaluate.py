"""tasks.evaluate: metrics against hand-computed values and scikit-learn, the trivial baseline, importance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from tasks.evaluate import evaluate_model, feature_importance
from tasks.train import fit_booster
from trainpipe.boosting import booster_params, load_matrix
from trainpipe.metrics import (
    average_ranks,
    baseline_predictions,
    binary_metrics,
    compute_metrics,
    multiclass_metrics,
    regression_metrics,
    roc_auc,
)
from trainpipe.spec import XGBoostSpec
from trainpipe.transform import LABEL


def test_roc_auc_hand_computed():
    # pairs (neg, pos): (0.1, 0.35) ok, (0.1, 0.8) ok, (0.4, 0.35) wrong, (0.4, 0.8) ok -> 3/4
    assert roc_auc(np.array([0, 0, 1, 1.0]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    # a tie counts half
    assert roc_auc(np.array([0, 1.0]), np.array([0.3, 0.3])) == 0.5
    assert roc_auc(np.array([1, 0, 1, 0.0]), np.array([0.9, 0.1, 0.9, 0.9])) == pytest.approx(0.75)


def test_roc_auc_single_class_is_nan():
    assert math.isnan(roc_auc(np.array([1, 1.0]), np.array([0.1, 0.2])))


def test_average_ranks_share_ties():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_binary_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60).astype(float)
    prob = np.round(rng.random(60), 1)  # rounded: many ties, some exact 0 and 1
    metrics = binary_metrics(labels, prob)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, prob))
    assert metrics["logloss"] == pytest.approx(log_loss(labels, np.clip(prob, 1e-15, 1 - 1e-15)))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, prob >= 0.5))


def test_binary_logloss_hand_computed():
    metrics = binary_metrics(np.array([1.0, 0.0]), np.array([0.8, 0.4]))
    assert metrics["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert metrics["accuracy"] == 1.0
    assert metrics["auc"] == 1.0


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 50)
    prob = rng.dirichlet([1, 1, 1], 50)
    metrics = multiclass_metrics(labels.astype(float), prob)
    assert metrics["mlogloss"] == pytest.approx(log_loss(labels, prob, labels=[0, 1, 2]))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, prob.argmax(axis=1)))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=40)
    pred = labels + rng.normal(size=40)
    metrics = regression_metrics(labels, pred)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(labels, pred)))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(labels, pred))
    assert metrics["r2"] == pytest.approx(r2_score(labels, pred))


def test_regression_r2_of_constant_labels_is_nan():
    metrics = regression_metrics(np.ones(3), np.ones(3))
    assert metrics["rmse"] == 0.0
    assert math.isnan(metrics["r2"])


def test_compute_metrics_dispatches_per_task():
    assert set(compute_metrics("binary", np.array([0, 1.0]), np.array([0.2, 0.7]))) == {"auc", "logloss", "accuracy"}
    assert set(compute_metrics("multiclass", np.array([0, 1.0]), np.eye(2))) == {"mlogloss", "accuracy"}
    assert set(compute_metrics("regression", np.array([0, 1.0]), np.array([0, 1.0]))) == {"rmse", "mae", "r2"}


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


@pytest.fixture
def trained(prepared):
    prep = prepared("binary")
    types = prep["transform"]["feature_types"]
    params = booster_params(XGBoostSpec(nthread=2), "binary", None, seed=1)
    booster, _ = fit_booster(load_matrix(prep["matrices"]["train"], types),
                             load_matrix(prep["matrices"]["valid"], types), params, 100, 10)
    return prep, booster


def test_evaluate_model_against_sklearn_and_baseline(trained):
    prep, booster = trained
    test = prep["matrices"]["test"]
    train_labels = prep["matrices"]["train"].get_column(LABEL).to_numpy()
    result = evaluate_model(booster, test, train_labels, "binary", 2, prep["transform"]["feature_types"])
    labels = test.get_column(LABEL).to_numpy()
    prob = booster.predict(load_matrix(test, prep["transform"]["feature_types"]))
    assert result["headline_metric"] == "auc"
    assert result["test_rows"] == test.height
    assert result["metrics"]["auc"] == pytest.approx(roc_auc_score(labels, prob))
    assert result["metrics"]["logloss"] == pytest.approx(log_loss(labels, prob), rel=1e-5)
    assert result["baseline_metrics"]["auc"] == 0.5
    baseline = np.full(len(labels), train_labels.mean())
    assert result["baseline_metrics"]["logloss"] == pytest.approx(log_loss(labels, baseline))
    # the data are learnable: the model beats the baseline
    assert result["metrics"]["auc"] > 0.8
    assert result["metrics"]["logloss"] < result["baseline_metrics"]["logloss"]


def test_feature_importance_lists_every_feature_most_important_first(trained):
    prep, booster = trained
    features = prep["transform"]["features"] + ["never_used"]
    rows = feature_importance(booster, features)
    assert [r["feature"] for r in rows][0] == "x1"  # the strongest signal
    assert {r["feature"] for r in rows} == set(features)
    assert sum(r["gain_share"] for r in rows) == pytest.approx(1.0)
    gains = [r["gain"] for r in rows]
    assert gains == sorted(gains, reverse=True)
    unused = next(r for r in rows if r["feature"] == "never_used")
    assert unused == {"feature": "never_used", "gain": 0.0, "gain_share": 0.0, "splits": 0}
