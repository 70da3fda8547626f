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


def test_a_champion_scores_the_holdout_alike_whole_or_in_slices(prepared, tmp_path):
    """Out of core the gate reads the raw test part in slices (`HoldoutInputs` with `slice_rows`): the champion's
    scores, and so the verdict, are those of the whole part read at once."""
    from trainpipe import storage
    from trainpipe.promotion import HoldoutInputs
    from trainpipe.scoring import champion_predictions, write_holdout

    data = prepared("multiclass", n=800)
    transform, test = data["transform"], data["parts"]["test"]
    train = load_matrix(data["matrices"]["train"], transform["feature_types"])
    booster = xgb.train({"objective": "multi:softprob", "num_class": len(data["classes"]), "seed": 0, "nthread": 1},
                        train, 5)
    champion = {"version": 1, "booster": booster, "transform": transform}
    rows_uri, holdout_uri = str(tmp_path / "test.parquet"), str(tmp_path / "holdout.parquet")
    storage.write_parquet(test, rows_uri)
    labels = data["matrices"]["test"].get_column("__label__").to_numpy()
    whole = champion_predictions(champion, test, "multiclass", data["classes"])
    write_holdout(holdout_uri, labels, whole, np.full_like(whole, 1 / len(data["classes"])))
    sliced_inputs = HoldoutInputs(holdout_uri, rows_uri, slice_rows=37)
    sliced = champion_predictions(champion, sliced_inputs.rows, "multiclass", data["classes"])
    assert whole.shape == (len(labels), len(data["classes"]))
    assert np.array_equal(sliced, whole)
    assert sum(1 for _ in sliced_inputs.rows) == -(-test.height // 37) > 1  # several slices, read lazily
    assert HoldoutInputs(holdout_uri, rows_uri).rows.equals(test)  # in memory: the part whole


def test_gate_when_the_champion_cannot_score_the_rows(prepared):
    data = prepared("binary")
    transform = data["transform"]
    labels = data["matrices"]["test"].get_column("__label__").to_numpy()
    champion = {"version": 1, "booster": None, "transform": {**transform, "target": {**transform["target"],
                                                                                        "task": "regression"}}}
    verdict = gate(PromotionSpec(), "binary", data["classes"], labels, np.full(len(labels), 0.5),
                   np.full(len(labels), 0.5), data["parts"]["test"], champion, seed=0)
    assert not verdict["promote"] and "cannot score this holdout" in verdict["reason"]


def _pair(task: str, n: int, seed: int = 11):
    """Labels and two correlated models' predictions, the first slightly better."""
    rng = np.random.default_rng(seed)
    if task == "regression":
        labels = rng.normal(size=n) * 3
        noise = rng.normal(size=n)
        return labels, labels + noise + rng.normal(size=n) * 0.3, labels + noise + rng.normal(size=n) * 0.5
    if task == "multiclass":
        labels = rng.integers(0, 3, size=n).astype(float)
        base = rng.random((n, 3))
        ours, theirs = base.copy(), base.copy()
        ours[np.arange(n), labels.astype(int)] += 0.6
        theirs[np.arange(n), labels.astype(int)] += 0.5
        return labels, ours / ours.sum(axis=1, keepdims=True), theirs / theirs.sum(axis=1, keepdims=True)
    labels = (rng.random(n) < 0.3).astype(float)
    common = rng.random(n) * 0.7
    ours = np.clip(labels * 0.3 + common + rng.random(n) * 0.05, 0, 1)
    theirs = np.clip(labels * 0.27 + common + rng.random(n) * 0.05, 0, 1)
    return labels, ours, theirs


@pytest.mark.parametrize(("task", "metric", "larger"), [
    ("binary", "auc", True), ("binary", "logloss", False), ("binary", "accuracy", True),
    ("multiclass", "mlogloss", False), ("regression", "rmse", False), ("regression", "mae", False),
    ("regression", "r2", True),
])
def test_normal_interval_of_a_large_holdout_agrees_with_the_full_bootstrap(task, metric, larger):
    """Over `max_rows` rows the gate takes the normal interval of the paired influence values over every row:
    the same interval, within the bootstrap's own noise, as a paired bootstrap over every row."""
    n = 20_000
    labels, ours, theirs = _pair(task, n)
    boot = paired_bootstrap(task, metric, larger, labels, ours, theirs, 2000, 0.95, seed=1)
    fast = paired_bootstrap(task, metric, larger, labels, ours, theirs, 2000, 0.95, seed=1, max_rows=5_000)
    assert (boot["interval"], fast["interval"]) == ("bootstrap", "normal")
    assert boot["rows_resampled"] == n and fast["rows"] == n
    assert fast["improvement"] == boot["improvement"]  # the observed difference uses every row either way
    width = boot["ci_high"] - boot["ci_low"]
    assert width > 0
    assert fast["ci_high"] - fast["ci_low"] == pytest.approx(width, rel=0.12)
    assert fast["ci_low"] == pytest.approx(boot["ci_low"], abs=0.15 * width)
    assert fast["ci_high"] == pytest.approx(boot["ci_high"], abs=0.15 * width)


def test_normal_interval_is_nan_when_the_metric_is_undefined():
    labels = np.zeros(20_000)  # one class only: no AUC
    scores = np.random.default_rng(0).random(20_000)
    evidence = paired_bootstrap("binary", "auc", True, labels, scores, np.full(20_000, 0.5), 200, 0.95, seed=1,
                                max_rows=5_000)
    assert evidence["interval"] == "normal" and np.isnan(evidence["ci_low"]) and np.isnan(evidence["ci_high"])
