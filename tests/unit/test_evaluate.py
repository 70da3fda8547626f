"""tasks.evaluate: the model's and the trivial baseline's holdout metrics against scikit-learn, importance.

The metrics themselves are checked in test_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from tasks.evaluate import evaluate_model, feature_importance
from tasks.train import fit_booster
from trainpipe.boosting import booster_params, load_matrix
from trainpipe.spec import XGBoostSpec
from trainpipe.transform import LABEL


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
