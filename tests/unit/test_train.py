"""tasks.train: XGBoost parameters, reproducible fits, early stopping."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from tasks.train import fit_booster
from trainpipe.boosting import booster_params, cuda_visible, load_matrix, model_bytes
from trainpipe.errors import SpecError
from trainpipe.spec import XGBoostSpec
from trainpipe.transform import LABEL

SMALL = XGBoostSpec(nthread=2, subsample=0.8, colsample_bytree=0.8)


def fit(prep: dict, params: dict, rounds: int = 60, early: int = 10):
    types = prep["transform"]["feature_types"]
    dtrain = load_matrix(prep["matrices"]["train"], types)
    dvalid = load_matrix(prep["matrices"]["valid"], types)
    return fit_booster(dtrain, dvalid, params, rounds, early)


@pytest.mark.parametrize(
    ("task", "objective", "metric"),
    [
        ("binary", "binary:logistic", "logloss"),
        ("multiclass", "multi:softprob", "mlogloss"),
        ("regression", "reg:squarederror", "rmse"),
    ],
)
def test_booster_params_per_task(task, objective, metric):
    params = booster_params(XGBoostSpec(max_depth=4, nthread=3), task, 3 if task == "multiclass" else None, seed=9)
    assert params["objective"] == objective
    assert params["eval_metric"] == metric
    assert params["tree_method"] == "hist"
    assert params["seed"] == 9
    assert params["max_depth"] == 4
    assert params["nthread"] == 3
    assert params.get("num_class") == (3 if task == "multiclass" else None)


def test_booster_params_extra_params_win():
    spec = XGBoostSpec(extra_params={"max_depth": 2, "gamma": 0.5, "eval_metric": "auc"})
    params = booster_params(spec, "binary", None, seed=1)
    assert params["max_depth"] == 2
    assert params["gamma"] == 0.5
    assert params["eval_metric"] == "auc"


def test_booster_params_default_nthread_is_positive():
    assert booster_params(XGBoostSpec(), "binary", None, seed=1)["nthread"] >= 1


@pytest.mark.skipif(cuda_visible(), reason="a CUDA device is visible here")
def test_cuda_without_a_gpu_is_a_spec_error():
    with pytest.raises(SpecError, match="xgboost.device is 'cuda'"):
        booster_params(XGBoostSpec(device="cuda"), "binary", None, seed=1)


def test_load_matrix_names_types_and_labels(prepared):
    prep = prepared("binary", n=40)
    frame = prep["matrices"]["train"]
    matrix = load_matrix(frame, prep["transform"]["feature_types"])
    assert matrix.feature_names == ["x1", "x2", "c"]
    assert matrix.feature_types == ["q", "q", "c"]
    assert matrix.num_row() == frame.height
    assert matrix.get_label().tolist() == frame.get_column(LABEL).to_list()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_same_seed_gives_byte_identical_models(prepared, task):
    prep = prepared(task)
    n_classes = len(prep["classes"]) if prep["classes"] else None
    params = booster_params(SMALL, task, n_classes, seed=7)
    first, info_first = fit(prep, params)
    second, info_second = fit(prep, dict(params))
    assert model_bytes(first) == model_bytes(second)
    assert info_first == info_second


def test_other_seed_gives_another_model_when_sampling(prepared):
    prep = prepared("binary")
    first, _ = fit(prep, booster_params(SMALL, "binary", None, seed=7))
    second, _ = fit(prep, booster_params(SMALL, "binary", None, seed=8))
    assert model_bytes(first) != model_bytes(second)


def test_early_stopping_cuts_the_booster_at_its_best_iteration(prepared):
    prep = prepared("binary")
    # labels unrelated to the features: validation loss stops improving early
    rng = np.random.default_rng(1)
    for name in ("train", "valid"):
        frame = prep["matrices"][name]
        prep["matrices"][name] = frame.with_columns(pl.Series(LABEL, rng.integers(0, 2, frame.height).astype(float)))
    params = booster_params(XGBoostSpec(nthread=2, learning_rate=0.3), "binary", None, seed=1)
    booster, info = fit(prep, params, rounds=500, early=5)
    assert info["rounds_trained"] < 500
    assert info["rounds_trained"] == info["best_iteration"] + 1 + 5
    assert booster.num_boosted_rounds() == info["best_iteration"] + 1
    assert info["validation_metric"] == "logloss"
    # the reported score is the validation loss of the returned (cut) booster
    dvalid = load_matrix(prep["matrices"]["valid"], prep["transform"]["feature_types"])
    score = float(booster.eval(dvalid, "valid").split(":")[1])
    assert score == pytest.approx(info["best_validation_score"], abs=1e-5)


def test_no_early_stop_keeps_every_round(prepared):
    prep = prepared("regression")
    params = booster_params(XGBoostSpec(nthread=2, learning_rate=0.05), "regression", None, seed=1)
    booster, info = fit(prep, params, rounds=15, early=50)
    assert info["rounds_trained"] == 15
    assert booster.num_boosted_rounds() == info["best_iteration"] + 1


def test_model_bytes_load_back_to_the_same_predictions(prepared):
    prep = prepared("multiclass")
    booster, _ = fit(prep, booster_params(SMALL, "multiclass", 3, seed=3))
    data = model_bytes(booster)
    assert isinstance(data, bytes)
    assert data[:1] == b"{"  # UBJSON object, not a pickle
    reloaded = xgb.Booster(model_file=bytearray(data))
    dtest = load_matrix(prep["matrices"]["test"], prep["transform"]["feature_types"])
    np.testing.assert_array_equal(reloaded.predict(dtest), booster.predict(dtest))
    assert booster.predict(dtest).shape == (prep["matrices"]["test"].height, 3)


def test_size_defaults_switch_to_xgboost_own_rate_without_refit_on_large_training_parts():
    from trainpipe.boosting import LARGE_TRAIN_ROWS, sized_defaults
    from trainpipe.spec import XGBoostSpec

    small = sized_defaults(XGBoostSpec(), LARGE_TRAIN_ROWS - 1)
    large = sized_defaults(XGBoostSpec(), LARGE_TRAIN_ROWS)
    assert (small.learning_rate, small.refit) == (0.1, True)
    assert (large.learning_rate, large.refit) == (0.3, False)
    from trainpipe.boosting import WIDE_FEATURES

    wide = sized_defaults(XGBoostSpec(), 300, WIDE_FEATURES)
    assert (wide.learning_rate, wide.refit) == (large.learning_rate, large.refit)
    narrow = sized_defaults(XGBoostSpec(), 300, WIDE_FEATURES - 1)
    assert (narrow.learning_rate, narrow.refit) == (small.learning_rate, small.refit)
    chosen = sized_defaults(XGBoostSpec(learning_rate=0.05, refit=True), 10 * LARGE_TRAIN_ROWS)
    assert (chosen.learning_rate, chosen.refit) == (0.05, True)  # what the spec sets is kept


def test_quantile_training_matrix_shares_the_training_bins_with_validation(tmp_path):
    import polars as pl

    from trainpipe.boosting import training_matrix
    from trainpipe.transform import LABEL

    frame = pl.DataFrame({"a": [float(i % 7) for i in range(200)], "b": [float(i) for i in range(200)],
                          LABEL: [float(i % 2) for i in range(200)]})
    dtrain = training_matrix(frame, ["q", "q"], max_bin=16)
    dvalid = training_matrix(frame.head(50), ["q", "q"], max_bin=16, ref=dtrain)
    assert (dtrain.num_row(), dtrain.num_col(), dvalid.num_row()) == (200, 2, 50)
    assert dtrain.feature_names == ["a", "b"]
