"""tasks.features: a transform fitted on training rows only, applied alike to any rows."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from tasks.features import fit_transform
from trainpipe.errors import DataError, SpecError
from trainpipe.spec import DerivedColumn, FeatureSpec
from trainpipe.transform import LABEL, apply_transform, encode_target, feature_columns, matrix_frame

# Hand-written rows are few: keep every level however rare (the default drops levels seen < 5 times).
DEFAULT = FeatureSpec(min_category_count=1)


@pytest.fixture
def train() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "rid": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "num": [1.0, 2.0, None, 4.0, 5.0, 6.0],
            "cat": ["a", "b", "a", "c", "a", "b"],
            "y": ["p", "q", "p", "q", "p", "q"],
        }
    )


def fit(frame: pl.DataFrame, spec: FeatureSpec = DEFAULT, ids=("rid",), task="binary", classes=("p", "q")):
    return fit_transform(frame, "y", task, list(classes) if classes else None, list(ids), spec)


def entry(transform: dict, name: str) -> dict:
    return next(e for e in transform["inputs"] if e["name"] == name)


def test_target_and_ids_are_not_features(train):
    transform = fit(train)
    assert transform["features"] == ["num", "cat"]
    assert transform["feature_types"] == ["q", "c"]
    assert transform["raw_columns"] == ["num", "cat"]
    assert transform["target"] == {"name": "y", "task": "binary", "classes": ["p", "q"]}


def test_category_levels_by_frequency_from_training_only(train):
    transform = fit(train)
    assert entry(transform, "cat")["levels"] == ["a", "b", "c"]  # 3, 2, 1 rows
    test = pl.DataFrame({"num": [1.0, 1.0, 1.0, 1.0], "cat": ["c", "a", "b", "a"]})
    codes = apply_transform(test, transform).get_column("cat").to_list()
    assert codes == [2.0, 0.0, 1.0, 0.0]


def test_unseen_category_gets_a_null_code(train):
    transform = fit(train)
    test = pl.DataFrame({"num": [1.0, 2.0, 3.0], "cat": ["zzz", "a", None]})
    assert apply_transform(test, transform).get_column("cat").to_list() == [None, 0.0, None]


def test_max_categories_keeps_the_most_frequent_levels(train):
    transform = fit(train, FeatureSpec(min_category_count=1, max_categories=2))
    assert entry(transform, "cat")["levels"] == ["a", "b"]
    out = apply_transform(train, transform)
    assert out.get_column("cat").to_list() == [0.0, 1.0, 0.0, None, 0.0, 1.0]


def test_a_categorical_column_with_more_levels_than_native_category_levels_is_a_frequency_rank(train):
    ranked = fit(train, FeatureSpec(min_category_count=1, native_category_levels=2))
    assert ranked["feature_types"] == ["q", "q"]  # 3 levels > 2: an ordered number, not categorical splits
    assert entry(ranked, "cat")["native"] is False
    assert apply_transform(train, ranked).get_column("cat").to_list() == [0.0, 1.0, 0.0, 2.0, 0.0, 1.0]
    native = fit(train, FeatureSpec(min_category_count=1, native_category_levels=3))
    assert native["feature_types"] == ["q", "c"] and entry(native, "cat")["native"] is True


def test_a_transform_written_before_native_levels_existed_keeps_categorical_splits(train):
    transform = fit(train)
    del entry(transform, "cat")["native"]
    assert feature_columns(transform["inputs"])[1] == ["q", "c"]


def test_ties_in_frequency_are_broken_by_name():
    frame = pl.DataFrame({"cat": ["z", "m", "a", "m", "z", "a"], "y": ["p", "q"] * 3})
    transform = fit(frame, ids=())
    assert entry(transform, "cat")["levels"] == ["a", "m", "z"]


def test_output_is_float32_in_transform_order(train):
    transform = fit(train)
    out = apply_transform(train.select(["cat", "y", "num", "rid"]), transform)
    assert out.columns == ["num", "cat"]
    assert all(dtype == pl.Float32 for dtype in out.schema.values())  # what XGBoost holds features as
    assert out.get_column("num").to_list() == [1.0, 2.0, None, 4.0, 5.0, 6.0]


def test_missing_optional_column_becomes_nulls(train):
    transform = fit(train)
    assert entry(transform, "num")["required"] is False  # it had a null in training
    out = apply_transform(pl.DataFrame({"cat": ["a", "b"]}), transform)
    assert out.columns == ["num", "cat"]
    assert out.get_column("num").to_list() == [None, None]
    assert out.get_column("cat").to_list() == [0.0, 1.0]


def test_missing_required_column_names_it_and_the_source(train):
    transform = fit(train)
    with pytest.raises(DataError, match=r"new\.csv: missing required column\(s\) cat"):
        apply_transform(pl.DataFrame({"num": [1.0]}), transform, source="new.csv")


def test_missing_dropped_column_is_fine(train):
    frame = train.with_columns(pl.lit(None, dtype=pl.String).alias("empty"))
    transform = fit(frame)
    assert entry(transform, "empty")["kind"] == "drop"
    assert "no values" in entry(transform, "empty")["reason"]
    assert apply_transform(train.drop("y"), transform).columns == ["num", "cat"]


def test_datetime_parts():
    frame = pl.DataFrame(
        {"ts": [dt.datetime(2024, 3, 1, 7, 30), dt.datetime(2023, 12, 31, 23, 5)], "y": [1.0, 2.0]}
    )
    transform = fit(frame, ids=(), task="regression", classes=None)
    assert transform["features"] == ["ts__year", "ts__month", "ts__day", "ts__weekday", "ts__hour"]
    assert transform["feature_types"] == ["q"] * 5
    out = apply_transform(frame, transform)
    # 2024-03-01 is a Friday (polars: Monday 1 .. Sunday 7), 2023-12-31 a Sunday
    assert out.row(0) == (2024.0, 3.0, 1.0, 5.0, 7.0)
    assert out.row(1) == (2023.0, 12.0, 31.0, 7.0, 23.0)


def test_datetime_parts_chosen_in_the_spec():
    frame = pl.DataFrame({"ts": [dt.datetime(2024, 2, 29, 13, 45)], "y": [1.0]})
    spec = FeatureSpec(min_category_count=1, datetime_parts=["dayofyear", "minute"])
    transform = fit(frame, spec, ids=(), task="regression", classes=None)
    assert apply_transform(frame, transform).to_dicts() == [{"ts__dayofyear": 60.0, "ts__minute": 45.0}]


def test_datetime_text_is_parsed_when_scoring():
    frame = pl.DataFrame({"ts": [dt.datetime(2024, 1, 1, 5)], "y": [1.0]})
    transform = fit(frame, ids=(), task="regression", classes=None)
    text = pl.DataFrame({"ts": ["2024-02-03T04:05:06", "garbage", None]})
    out = apply_transform(text, transform)
    assert out.row(0) == (2024.0, 2.0, 3.0, 6.0, 4.0)
    assert out.row(1) == (None,) * 5


def test_date_column_with_parts_it_has():
    frame = pl.DataFrame({"d": [dt.date(2024, 2, 29), dt.date(2024, 3, 4)], "y": [1.0, 2.0]})
    spec = FeatureSpec(min_category_count=1, datetime_parts=["year", "month", "weekday"])
    transform = fit(frame, spec, ids=(), task="regression", classes=None)
    assert apply_transform(frame, transform).rows() == [(2024.0, 2.0, 4.0), (2024.0, 3.0, 1.0)]


def test_date_column_with_default_parts():
    frame = pl.DataFrame({"d": [dt.date(2024, 2, 29), dt.date(2024, 3, 4)], "y": [1.0, 2.0]})
    transform = fit(frame, ids=(), task="regression", classes=None)
    out = apply_transform(frame, transform)
    assert out.get_column("d__year").to_list() == [2024.0, 2024.0]
    assert out.get_column("d__day").to_list() == [29.0, 4.0]


def test_derived_sql_column(train):
    spec = FeatureSpec(min_category_count=1, derived=[DerivedColumn(name="ratio", expr="num / 2"),
                                DerivedColumn(name="is_a", expr="CASE WHEN cat = 'a' THEN 1 ELSE 0 END")])
    transform = fit(train, spec)
    assert transform["features"] == ["num", "cat", "ratio", "is_a"]
    out = apply_transform(train, transform)
    assert out.get_column("ratio").to_list() == [0.5, 1.0, None, 2.0, 2.5, 3.0]
    assert out.get_column("is_a").to_list() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_derived_column_is_computed_from_scoring_rows(train):
    transform = fit(train, FeatureSpec(min_category_count=1, derived=[DerivedColumn(name="double", expr="num * 2")]))
    out = apply_transform(pl.DataFrame({"num": [10.0], "cat": ["b"], "double": [-1.0]}), transform)
    assert out.get_column("double").to_list() == [20.0]


def test_bad_derived_expression_names_the_column(train):
    spec = FeatureSpec(min_category_count=1, derived=[DerivedColumn(name="bad", expr="no_such_column + 1")])
    with pytest.raises(SpecError) as error:
        fit(train, spec)
    assert "features.derived 'bad'" in str(error.value)
    assert "no_such_column + 1" in str(error.value)


def test_numeric_text_is_coerced(train):
    frame = train.with_columns(pl.Series("amount", ["1.5", " 2 ", "3", "4e1", "-5", None]))
    transform = fit(frame)
    assert entry(transform, "amount")["kind"] == "numeric"
    assert entry(transform, "amount")["coerced_from"] == "text"
    assert transform["feature_types"][transform["features"].index("amount")] == "q"
    assert apply_transform(frame, transform).get_column("amount").to_list() == [1.5, 2.0, 3.0, 40.0, -5.0, None]
    scoring = pl.DataFrame({"num": [1.0], "cat": ["a"], "amount": ["n/a"]})
    assert apply_transform(scoring, transform).get_column("amount").to_list() == [None]


def test_mostly_text_stays_categorical(train):
    frame = train.with_columns(pl.Series("code", ["1", "2", "x", "1", "2", "x"]))
    assert entry(fit(frame), "code")["kind"] == "categorical"


def test_high_cardinality_text_is_dropped_as_identifier():
    n = 30
    frame = pl.DataFrame({"serial": [f"s{i}" for i in range(n)], "few": ["a", "b"] * 15, "y": ["p", "q"] * 15})
    transform = fit(frame, FeatureSpec(min_category_count=1, max_categories=3), ids=())
    serial = entry(transform, "serial")
    assert serial["kind"] == "drop"
    assert "30 distinct text values in 30 rows" in serial["reason"]
    assert transform["features"] == ["few"]
    # many levels but not in over half the rows: kept, truncated to max_categories
    frame = pl.DataFrame({"lvl": ["a", "b", "c", "d"] * 3, "y": ["p", "q"] * 6})
    kept = fit(frame, FeatureSpec(min_category_count=1, max_categories=3), ids=())
    assert entry(kept, "lvl")["kind"] == "categorical"


def test_boolean_column_becomes_0_1(train):
    frame = train.with_columns(pl.Series("flag", [True, False, None, True, False, True]))
    transform = fit(frame)
    assert entry(transform, "flag")["kind"] == "boolean"
    assert apply_transform(frame, transform).get_column("flag").to_list() == [1.0, 0.0, None, 1.0, 0.0, 1.0]


def test_no_usable_features_is_an_error():
    frame = pl.DataFrame({"rid": ["a", "b"], "y": ["p", "q"]})
    with pytest.raises(DataError, match="no usable feature columns besides the target 'y'"):
        fit(frame)


def test_transform_survives_a_json_round_trip(train):
    transform = fit(train, FeatureSpec(min_category_count=1, derived=[DerivedColumn(name="r", expr="num + 1")]))
    reloaded = json.loads(json.dumps(transform))
    assert apply_transform(train, reloaded).equals(apply_transform(train, transform))


def test_encode_target_classification(train):
    transform = fit(train)
    labels = encode_target(pl.Series("y", ["q", "p", "q"]), transform)
    assert labels.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(DataError, match=r"target 'y' has values outside the classes \['p', 'q'\]: \['r'\]"):
        encode_target(pl.Series("y", ["p", "r"]), transform)


def test_encode_target_regression(train):
    transform = fit(train.with_columns(pl.Series("y", [1.0, 2, 3, 4, 5, 6])), task="regression", classes=None)
    assert encode_target(pl.Series("y", [1.5, 2.0]), transform).tolist() == [1.5, 2.0]
    assert encode_target(pl.Series("y", ["1.5", "2"]), transform).tolist() == [1.5, 2.0]
    with pytest.raises(DataError, match="not numbers"):
        encode_target(pl.Series("y", ["1.5", "abc"]), transform)


def test_matrix_frame_has_features_and_label(train):
    transform = fit(train)
    matrix = matrix_frame(train, transform, "train.parquet")
    assert matrix.columns == ["num", "cat", LABEL]
    assert matrix.get_column(LABEL).to_list() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert matrix.get_column("num")[2] is None


def test_near_unique_text_is_dropped_even_below_max_categories():
    # like a car model name: 25 distinct values in 30 rows, far under max_categories=256
    names = [f"model {i}" for i in range(25)] + ["model 0"] * 5
    frame = pl.DataFrame({"name": names, "x": list(range(30)), "y": ["p", "q"] * 15})
    transform = fit(frame, FeatureSpec(), ids=())
    assert entry(transform, "name")["kind"] == "drop"
    assert transform["features"] == ["x"]


def test_rare_levels_are_missing_in_training_too():
    frame = pl.DataFrame({"c": ["a"] * 6 + ["b"] * 5 + ["rare1", "rare2"], "y": ["p", "q"] * 6 + ["p"]})
    transform = fit(frame, FeatureSpec(min_category_count=5), ids=())
    c = entry(transform, "c")
    assert c["levels"] == ["a", "b"] and c["rare_levels"] == 2
    codes = apply_transform(frame, transform).get_column("c").to_list()
    assert codes[:11] == [0.0] * 6 + [1.0] * 5
    assert codes[11:] == [None, None]


def test_applying_the_transform_per_partition_writes_the_same_files_as_on_the_whole_part(tmp_path):
    import numpy as np

    from trainpipe.matrices import write_matrix

    rng = np.random.default_rng(4)
    n = 1000
    start = dt.datetime(2024, 1, 1)
    frame = pl.DataFrame({
        "x": [None if u < 0.1 else float(z) for u, z in zip(rng.random(n), rng.normal(size=n))],
        "text_num": [None if i % 7 == 0 else f" {i * 0.5} " for i in range(n)],
        "c": rng.choice(["u", "v", "w", "rare"], size=n, p=[0.5, 0.3, 0.19, 0.01]),
        "when": [start + dt.timedelta(hours=5 * i) for i in range(n)],
        "y": rng.choice(["neg", "pos"], size=n),
    }).with_columns(pl.when(pl.int_range(pl.len()) >= 500).then(None).otherwise(pl.col("x")).alias("late_nulls"))
    spec = FeatureSpec(derived=[DerivedColumn(name="x2", expr="x * 2")], min_category_count=20)
    transform = fit_transform(frame[:600], "y", "binary", ["neg", "pos"], [], spec)
    scoring = frame.with_columns(pl.when(pl.int_range(pl.len()) > 900).then(pl.lit("unseen")).otherwise(pl.col("c"))
                                 .alias("c"))  # levels unseen in training only in the last partitions
    whole, whole_digests = write_matrix(matrix_frame(scoring, transform, "part"), str(tmp_path / "whole"), 128)
    per, per_digests = write_matrix(scoring, str(tmp_path / "per"), 128,
                                    apply=lambda rows: matrix_frame(rows, transform, "part"))
    assert len(per) == len(whole) == 8
    assert per_digests == whole_digests  # byte for byte, partition by partition


def test_float32_features_train_the_same_booster_as_float64_ones():
    """Features are Float32 because XGBoost rounds a Float64 input to float32 itself: the same data in either
    dtype gives a byte-identical booster (and half the memory and Parquet)."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(3)
    wide = rng.normal(scale=1e3, size=(2000, 4))  # Float64 values with more digits than float32 keeps
    frame = pl.DataFrame({"a": wide[:, 0], "b": wide[:, 1], "c": wide[:, 2], "d": wide[:, 3],
                          "y": np.where(wide[:, 0] + rng.normal(size=2000) * 300 > 0, "p", "q")})
    transform = fit_transform(frame, "y", "binary", ["p", "q"], [], DEFAULT)
    out = apply_transform(frame, transform)
    assert set(out.schema.values()) == {pl.Float32}
    label = encode_target(frame.get_column("y"), transform)
    params = {"objective": "binary:logistic", "tree_method": "hist", "seed": 0}
    boosters = [xgb.train(params, xgb.QuantileDMatrix(x, label=label), num_boost_round=5).save_raw("ubj")
                for x in (out.to_numpy(), frame.drop("y").to_numpy())]
    assert out.to_numpy().dtype == np.float32 and boosters[0] == boosters[1]
