"""trainpipe.promotion: the paired bootstrap, the verdict's rule and wording, champions re-scored through their transform."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from trainpipe.boosting import load_matrix
from trainpipe.errors import DataError, SpecError
from trainpipe.promotion import gate, gate_metric, judge, paired_bootstrap
from trainpipe.scoring import reorder_classes
from trainpipe.spec import PromotionSpec


def noisy_scores(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(labels * 0.6 + 0.2 + rng.normal(scale=noise, size=len(labels)), 0.01, 0.99)


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2, 400).astype(float)


def bootstrap(labels, ours, theirs, metric="auc", larger=True, samples=300):
    return paired_bootstrap("binary", metric, larger, labels, ours, theirs, samples, 0.95, seed=3)


def test_clearly_better_model_has_interval_above_zero(labels):
    evidence = bootstrap(labels, noisy_scores(labels, 0.1, 2), noisy_scores(labels, 0.6, 2))
    assert evidence["improvement"] > 0.1 and evidence["ci_low"] > 0
    assert judge("gate", 0.0, evidence, "champion v1")[0]
    assert not judge("gate", 0.5, evidence, "champion v1")[0]  # but not by a margin of 0.5 AUC


def test_same_model_is_not_an_improvement(labels):
    scores = noisy_scores(labels, 0.3, 2)
    evidence = bootstrap(labels, scores, scores)
    assert evidence["improvement"] == 0 and evidence["ci_low"] == evidence["ci_high"] == 0
    promote, reason = judge("gate", 0.0, evidence, "champion v4")
    assert not promote and "not better than the champion v4" in reason


def test_small_gain_with_wide_interval_is_refused(labels):
    ours, theirs = noisy_scores(labels, 0.50, 2), noisy_scores(labels, 0.51, 5)
    evidence = bootstrap(labels, ours, theirs)
    assert evidence["ci_low"] < 0 < evidence["ci_high"]
    promote, reason = judge("gate", 0.0, evidence, "champion v1")
    assert not promote and ("regression is not ruled out" in reason or "not better" in reason)


def test_smaller_is_better_metrics_are_oriented(labels):
    good, bad = noisy_scores(labels, 0.1, 2), noisy_scores(labels, 0.6, 2)
    evidence = bootstrap(labels, good, bad, metric="logloss", larger=False)
    assert evidence["challenger"] < evidence["reference"] and evidence["improvement"] > 0


def test_policies_always_and_never():
    assert judge("always", 0.0, None, "champion v1") == (True, "policy 'always': every new version becomes champion")
    assert not judge("never", 0.0, None, "champion v1")[0]


def test_metric_must_fit_the_task():
    assert gate_metric(PromotionSpec(), "regression") == ("rmse", False)
    assert gate_metric(PromotionSpec(metric="accuracy"), "binary") == ("accuracy", True)
    with pytest.raises(SpecError, match="promotion.metric 'auc' is not a regression metric"):
        gate_metric(PromotionSpec(metric="auc"), "regression")


def test_reorder_classes():
    binary = np.array([0.9, 0.2])
    assert np.allclose(reorder_classes(binary, "binary", ["a", "b"], ["b", "a"]), [0.1, 0.8])
    assert reorder_classes(binary, "binary", ["a", "b"], ["a", "b"]) is binary
    multi = np.array([[0.1, 0.2, 0.7]])
    assert np.allclose(reorder_classes(multi, "multiclass", ["x", "y", "z"], ["z", "x", "y"]), [[0.7, 0.1, 0.2]])
    with pytest.raises(DataError, match="classes"):
        reorder_classes(multi, "multiclass", ["x", "y", "z"], ["x", "y", "w"])


def fit(matrices, transform, rounds: int, depth: int) -> xgb.Booster:
    train = load_matrix(matrices["train"], transform["feature_types"])
    return xgb.train({"objective": "binary:logistic", "max_depth": depth, "seed": 0, "nthread": 1}, train, rounds)


def test_gate_rescores_the_champion_through_its_own_transform(prepared):
    data = prepared("binary")
    transform, matrices = data["transform"], data["matrices"]
    test = load_matrix(matrices["test"], transform["feature_types"])
    labels = matrices["test"].get_column("__label__").to_numpy()
    weak, strong = fit(matrices, transform, 1, 1), fit(matrices, transform, 30, 3)
    baseline = np.full(len(labels), 0.5)
    champion = {"version": 3, "booster": weak, "transform": transform}

    spec = PromotionSpec(bootstrap_samples=200)
    better = gate(spec, "binary", data["classes"], labels, strong.predict(test), baseline,
                  data["parts"]["test"], champion, seed=0)
    worse = gate(spec, "binary", data["classes"], labels, weak.predict(test), baseline,
                 data["parts"]["test"], {**champion, "booster": strong}, seed=0)

    assert better["promote"] and better["against"] == "champion" and better["champion_version"] == 3
    assert better["evidence"]["reference"] == pytest.approx(better["champion_metrics"]["auc"])
    assert not worse["promote"] and worse["evidence"]["improvement"] < 0
    first = gate(spec, "binary", data["classes"], labels, strong.predict(test), baseline,
                 data["parts"]["test"], None, seed=0)
    assert first["promote"] and first["against"] == "baseline" and first["evidence"]["reference"] == 0.5


def test_gate_when_the_champion_cannot_score_the_rows(prepared):
    data = prepared("binary")
    transform = data["transform"]
    labels = data["matrices"]["test"].get_column("__label__").to_numpy()
    champion = {"version": 1, "booster": None, "transform": {**transform, "target": {**transform["target"],
                                                                                        "task": "regression"}}}
    verdict = gate(PromotionSpec(), "binary", data["classes"], labels, np.full(len(labels), 0.5),
                   np.full(len(labels), 0.5), data["parts"]["test"], champion, seed=0)
    assert not verdict["promote"] and "cannot score this holdout" in verdict["reason"]


def test_bootstrap_over_a_subsample_of_a_large_holdout_is_wider_not_narrower():
    rng = np.random.default_rng(11)
    n = 30_000
    labels = (rng.random(n) < 0.3).astype(float)
    ours = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    theirs = np.clip(labels * 0.28 + rng.random(n) * 0.72, 0, 1)
    full = paired_bootstrap("binary", "auc", True, labels, ours, theirs, 300, 0.95, seed=1)
    sub = paired_bootstrap("binary", "auc", True, labels, ours, theirs, 300, 0.95, seed=1, max_rows=5_000)
    assert (full["rows_resampled"], sub["rows_resampled"]) == (n, 5_000)
    assert full["improvement"] == sub["improvement"]  # the observed difference uses every row
    assert full["auc_resamples"] == "linearised" and sub["auc_resamples"] == "exact"
    assert sub["ci_high"] - sub["ci_low"] > 1.5 * (full["ci_high"] - full["ci_low"])
