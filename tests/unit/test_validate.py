"""tasks.validate: contract inference, violation reports, null targets, task inference."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tasks.validate import check_frame, validate_snapshot
from trainpipe.contract import infer_contract, infer_task, target_classes
from trainpipe.errors import DataError
from trainpipe.spec import ValidationSpec

ENFORCE = ValidationSpec()


@pytest.fixture
def labelled(people) -> pl.DataFrame:
    """The people rows with a target (5 of 6)."""
    return people.filter(pl.col("label").is_not_null())


@pytest.fixture
def contract(labelled) -> dict:
    return infer_contract(labelled, "label", "binary", ["id"])


def new_rows(**changes) -> pl.DataFrame:
    """Three rows that satisfy the people contract, with some columns replaced."""
    base = {
        "id": ["n1", "n2", "n3"],
        "age": [25, 35, 45],
        "income": [2.0, 3.0, 4.0],
        "city": ["a", "b", "a"],
        "member": [True, False, True],
        "joined": [dt.date(2024, 2, d) for d in (1, 2, 3)],
        "seen": [dt.datetime(2024, 2, d, 3) for d in (1, 2, 3)],
        "label": ["yes", "no", "yes"],
    }
    base.update(changes)
    return pl.DataFrame(base)


def only(violations: list[dict], column: str) -> dict:
    found = [v for v in violations if v["column"] == column]
    assert len(found) == 1, violations
    return found[0]


# --- contract inference ---------------------------------------------------------------------------


def test_contract_kinds_and_dtypes(contract):
    kinds = {name: entry["kind"] for name, entry in contract["columns"].items()}
    assert kinds == {
        "id": "string",
        "age": "numeric",
        "income": "numeric",
        "city": "string",
        "member": "boolean",
        "joined": "date",
        "seen": "datetime",
        "label": "string",
    }
    assert contract["columns"]["age"]["dtype"] == "Int64"
    assert contract["columns"]["income"]["dtype"] == "Float64"


def test_contract_nullability(contract):
    nullable = {name for name, entry in contract["columns"].items() if entry["nullable"]}
    assert nullable == {"age"}


def test_contract_numeric_ranges(contract):
    assert (contract["columns"]["age"]["min"], contract["columns"]["age"]["max"]) == (20, 60)
    assert (contract["columns"]["income"]["min"], contract["columns"]["income"]["max"]) == (1.0, 10.0)
    assert "min" not in contract["columns"]["seen"]


def test_contract_categories_sorted_and_not_for_ids(contract):
    # row r4 (city "c") has a null target and was dropped before inference
    assert contract["columns"]["city"]["categories"] == ["a", "b"]
    assert "categories" not in contract["columns"]["id"]


def test_contract_target_and_classes(contract, labelled):
    assert contract["target"] == {"name": "label", "task": "binary", "classes": ["no", "yes"]}
    assert contract["id_columns"] == ["id"]
    assert contract["rows_seen"] == labelled.height


def test_contract_numeric_target_range_only_for_regression():
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 1]})
    classification = infer_contract(frame, "y", "binary", [])
    assert "min" not in classification["columns"]["y"]
    assert classification["target"]["classes"] == [0, 1]
    regression = infer_contract(frame, "y", "regression", [])
    assert (regression["columns"]["y"]["min"], regression["columns"]["y"]["max"]) == (0, 1)
    assert "classes" not in regression["target"]


def test_contract_is_json_safe_for_non_finite_values():
    frame = pl.DataFrame({"x": [1.0, float("inf")], "y": ["a", "b"]})
    contract = infer_contract(frame, "y", "binary", [])
    assert contract["columns"]["x"]["max"] is None


# --- validate_snapshot: first run ----------------------------------------------------------------


def test_first_run_drops_and_counts_null_targets(people, write_snapshot):
    uri = write_snapshot(people)
    checked, contract, report = validate_snapshot(uri, "fp", "label", None, ["id"], [], None, ENFORCE, None)
    assert checked.height == 5
    assert checked.get_column("label").null_count() == 0
    assert "r4" not in checked.get_column("id").to_list()
    assert report["rows_in"] == 6
    assert report["rows_valid"] == 5
    assert report["dropped_null_target"] == 1
    assert report["contract"] == "inferred"
    assert report["task"] == "binary"
    assert report["passed"] is True
    assert report["violations"] == []
    assert contract["target"]["reason"]
    assert contract["origin"]


def test_first_run_coerces_to_contract_dtypes(people, write_snapshot):
    checked, _, _ = validate_snapshot(write_snapshot(people), "fp", "label", None, ["id"], [], None, ENFORCE, None)
    assert checked.schema["age"] == pl.Float64
    assert checked.schema["joined"] == pl.Date


def test_float32_columns_stay_float32_and_later_data_is_cast_to_the_contract(people, write_snapshot):
    """A column first seen as Float32 keeps it (XGBoost computes in float32: Float64 would only double it);
    other numbers are Float64, and later data is cast to what the contract recorded, range checks included."""
    first = people.with_columns(pl.col("income").cast(pl.Float32))
    checked, contract, _ = validate_snapshot(write_snapshot(first), "fp", "label", None, ["id"], [], None, ENFORCE,
                                             None)
    assert checked.schema["income"] == pl.Float32 and checked.schema["age"] == pl.Float64
    assert checked.get_column("income").to_list() == first.filter(pl.col("label").is_not_null())["income"].to_list()
    later, violations = check_frame(new_rows(income=[2.0, 3.0, 1e9]), contract, ENFORCE)
    assert later.schema["income"] == pl.Float32 and later.schema["age"] == pl.Float64
    assert only(violations, "income")["failing_rows"] == 1  # the range check still runs on the Float32 column


def test_drop_columns_are_removed(people, write_snapshot):
    checked, contract, _ = validate_snapshot(
        write_snapshot(people), "fp", "label", None, ["id"], ["income", "not-there"], None, ENFORCE, None
    )
    assert "income" not in checked.columns
    assert "income" not in contract["columns"]


def test_missing_spec_columns_are_named(people, write_snapshot):
    uri = write_snapshot(people)
    with pytest.raises(DataError) as error:
        validate_snapshot(uri, "fp", "outcome", None, ["customer_id"], [], "ts", ENFORCE, None)
    message = str(error.value)
    assert uri in message
    assert "target 'outcome'" in message
    assert "id column 'customer_id'" in message
    assert "time column 'ts'" in message


def test_every_target_null_is_an_error(people, write_snapshot):
    frame = people.with_columns(pl.lit(None, dtype=pl.String).alias("label"))
    with pytest.raises(DataError, match="every row has a null target 'label'"):
        validate_snapshot(write_snapshot(frame), "fp", "label", None, ["id"], [], None, ENFORCE, None)


def test_spec_binary_with_three_classes_is_an_error(write_snapshot):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "c", "a"]})
    with pytest.raises(DataError, match="task is binary but target 'y' has 3 classes"):
        validate_snapshot(write_snapshot(frame), "fp", "y", "binary", [], [], None, ENFORCE, None)


def test_spec_multiclass_on_a_continuous_target_is_an_error(write_snapshot):
    frame = pl.DataFrame({"x": [float(i) for i in range(150)], "y": [i * 0.5 for i in range(150)]})
    with pytest.raises(DataError, match="target 'y' has 150 classes .*regression target"):
        validate_snapshot(write_snapshot(frame), "fp", "y", "multiclass", [], [], None, ENFORCE, None)


def test_spec_task_overrides_inference_and_says_so(write_snapshot):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 1.0, 2.0]})
    _, contract, report = validate_snapshot(write_snapshot(frame), "fp", "y", "regression", [], [], None, ENFORCE, None)
    assert report["task"] == "regression"
    assert "set in the spec" in report["task_reason"]
    assert "binary" in report["task_reason"]  # what the data alone suggests
    assert contract["target"]["task"] == "regression"


def test_integer_class_target_passes_its_own_contract(write_snapshot):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "y": [0, 1, 0, 1, 1, 0]})
    _, contract, report = validate_snapshot(write_snapshot(frame), "fp", "y", None, [], [], None, ENFORCE, None)
    assert contract["target"]["classes"] == [0, 1]
    assert report["violations"] == []


# --- violations against an existing contract ------------------------------------------------------


def test_valid_new_rows_pass(contract):
    checked, violations = check_frame(new_rows(), contract, ENFORCE)
    assert violations == []
    assert checked.schema["age"] == pl.Float64


def test_out_of_range_value_is_reported(contract):
    # age seen in [20, 60]; tolerance 0.5 of the span allows [0, 80]
    _, violations = check_frame(new_rows(age=[25, 1000, 81]), contract, ENFORCE)
    violation = only(violations, "age")
    assert violation["check"].startswith("in_range")
    assert "0.0" in violation["check"] and "80.0" in violation["check"]
    assert violation["failing_rows"] == 2
    assert violation["example_rows"] == [1, 2]
    assert [float(v) for v in violation["examples"]] == [1000.0, 81.0]


def test_value_within_tolerance_passes(contract):
    _, violations = check_frame(new_rows(age=[0, 80, 40]), contract, ENFORCE)
    assert violations == []


def test_range_tolerance_zero_is_strict(contract):
    _, violations = check_frame(new_rows(age=[19, 60, 20]), contract, ValidationSpec(range_tolerance=0))
    assert only(violations, "age")["failing_rows"] == 1


def test_constant_column_gets_slack_from_its_value():
    contract = infer_contract(pl.DataFrame({"k": [5.0, 5.0, 5.0], "y": ["a", "b", "a"]}), "y", "binary", [])
    _, violations = check_frame(pl.DataFrame({"k": [7.0, 7.6, 2.0], "y": ["a", "b", "a"]}), contract, ENFORCE)
    violation = only(violations, "k")
    assert violation["failing_rows"] == 2
    assert [float(v) for v in violation["examples"]] == [7.6, 2.0]


def test_new_category_is_reported(contract):
    _, violations = check_frame(new_rows(city=["a", "zzz", "b"]), contract, ENFORCE)
    violation = only(violations, "city")
    assert violation["check"].startswith("isin")
    assert violation["failing_rows"] == 1
    assert violation["example_rows"] == [1]
    assert violation["examples"] == ["zzz"]


def test_new_category_allowed_when_the_spec_says_so(contract):
    _, violations = check_frame(new_rows(city=["a", "zzz", "b"]), contract, ValidationSpec(allow_new_categories=True))
    assert violations == []


def test_null_in_non_nullable_column_is_reported(contract):
    _, violations = check_frame(new_rows(income=[None, 2.0, None]), contract, ENFORCE)
    violation = only(violations, "income")
    assert violation["check"] == "not_nullable"
    assert violation["failing_rows"] == 2
    assert violation["example_rows"] == [0, 2]


def test_null_in_nullable_column_passes(contract):
    _, violations = check_frame(new_rows(age=[None, 30, None]), contract, ENFORCE)
    assert violations == []


def test_several_violations_each_named(contract):
    _, violations = check_frame(new_rows(age=[25, 1000, 40], income=[None, 2.0, 3.0], city=["q", "a", "a"]),
                                contract, ENFORCE)
    assert {v["column"] for v in violations} == {"age", "income", "city"}


def test_max_examples_limits_examples_not_the_count(contract):
    frame = new_rows(age=[100, 200, 300])
    _, violations = check_frame(frame, contract, ValidationSpec(max_examples=2))
    violation = only(violations, "age")
    assert violation["failing_rows"] == 3
    assert len(violation["examples"]) == 2
    assert len(violation["example_rows"]) == 2


def test_type_that_cannot_be_coerced_is_reported(contract):
    _, violations = check_frame(new_rows(income=["abc", "2.0", "3.0"]), contract, ENFORCE)
    assert violations
    assert any("abc" in map(str, v["examples"]) for v in violations)


def test_missing_column_is_reported_as_a_violation(contract):
    _, violations = check_frame(new_rows().drop("city"), contract, ENFORCE)
    assert any(v["column"] == "city" or "city" in map(str, v["examples"]) for v in violations)


def test_new_target_class_is_reported(contract):
    _, violations = check_frame(new_rows(label=["yes", "no", "maybe"]), contract, ENFORCE)
    target_violations = [v for v in violations if v["column"] == "label"]
    assert target_violations
    assert all(v["failing_rows"] == 1 for v in target_violations)
    assert "maybe" in target_violations[0]["examples"]


def test_new_target_class_lists_each_failing_row_once(contract):
    _, violations = check_frame(new_rows(label=["yes", "no", "maybe"]), contract, ENFORCE)
    violation = only(violations, "label")
    assert violation["example_rows"] == [2]
    assert violation["examples"] == ["maybe"]


def test_existing_contract_run_reports_violations_and_new_columns(contract, write_snapshot):
    frame = new_rows(city=["a", "zzz", "b"]).with_columns(pl.lit(1).alias("extra"))
    _, used, report = validate_snapshot(write_snapshot(frame), "fp2", "label", None, ["id"], [], None, ENFORCE,
                                        contract)
    assert used is contract
    assert report["contract"] == "existing"
    assert report["passed"] is False
    assert report["new_columns"] == ["extra"]
    assert only(report["violations"], "city")["examples"] == ["zzz"]


def test_existing_contract_task_mismatch_is_a_violation(contract, write_snapshot):
    _, _, report = validate_snapshot(write_snapshot(new_rows()), "fp2", "label", "multiclass", ["id"], [], None,
                                     ENFORCE, contract)
    assert report["task"] == "binary"
    violation = only(report["violations"], "label")
    assert "task is 'binary' in the contract, 'multiclass' in the spec" == violation["check"]


def test_existing_contract_other_target_is_a_violation(contract, write_snapshot):
    frame = new_rows().rename({"label": "outcome"})
    _, _, report = validate_snapshot(write_snapshot(frame), "fp2", "outcome", None, ["id"], [], None, ENFORCE,
                                     contract)
    assert any(v["check"] == "target is 'label' in the contract" for v in report["violations"])


# --- task inference -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "task"),
    [
        (["yes", "no", "yes", None], pl.String, "binary"),
        ([True, False, True], pl.Boolean, "binary"),
        (["a", "b", "c", "a"], pl.String, "multiclass"),
        ([0, 1, 1, 0], pl.Int64, "binary"),
        ([1.0, 0.0, 1.0], pl.Float64, "binary"),
        ([0, 1, 2, 1], pl.Int64, "multiclass"),
        ([3, 7, 9, 11, 3], pl.Int32, "multiclass"),
        (list(range(11)), pl.Int64, "regression"),
        ([0.0, 1.0, 2.0], pl.Float64, "regression"),
        ([0.5, 1.5, 2.25, 3.0], pl.Float64, "regression"),
    ],
)
def test_infer_task(values, dtype, task):
    inferred, reason = infer_task(pl.Series("t", values, dtype=dtype))
    assert inferred == task
    assert "'t'" in reason


@pytest.mark.parametrize(
    "series",
    [
        pl.Series("t", ["a", "a", None]),
        pl.Series("t", [None, None], dtype=pl.Int64),
        pl.Series("t", [4.0, 4.0]),
    ],
)
def test_infer_task_single_value_target_is_an_error(series):
    with pytest.raises(DataError, match="target column 't' has [01] distinct non-null value"):
        infer_task(series)


def test_infer_task_too_many_text_classes_is_an_error():
    with pytest.raises(DataError, match="too many classes"):
        infer_task(pl.Series("t", [f"c{i}" for i in range(101)]))


def test_infer_task_unlearnable_type_is_an_error():
    with pytest.raises(DataError, match="cannot be learned"):
        infer_task(pl.Series("t", [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]))


def test_target_classes_sorted_without_nulls():
    assert target_classes(pl.Series(["b", None, "a", "b"])) == ["a", "b"]
    assert target_classes(pl.Series([2, 0, 1, 0])) == [0, 1, 2]


def test_values_that_do_not_convert_are_counted_and_the_frame_keeps_the_contract_dtypes(contract):
    checked, violations = check_frame(new_rows(income=["abc", "2.0", "x"]), contract, ENFORCE)
    violation = next(v for v in violations if v["check"].startswith("coerce_dtype"))
    assert violation["column"] == "income"
    assert violation["failing_rows"] == 2
    assert violation["example_rows"] == [0, 2]
    assert violation["examples"] == ["abc", "x"]
    # what goes on (warn mode trains on it) has the contract's type, the bad values missing
    assert checked.schema["income"] == pl.Float64
    assert checked.get_column("income").to_list() == [None, 2.0, None]


def test_a_type_with_no_conversion_is_reported_as_a_wrong_dtype(contract):
    _, violations = check_frame(new_rows(income=[[1.0], [2.0], [3.0]]), contract, ENFORCE)
    assert any(v["column"] == "income" and "dtype" in v["check"] for v in violations)


def test_wide_frames_are_checked_in_blocks_and_every_block_reports(write_snapshot):
    from tasks.validate import SCHEMA_BLOCK_COLUMNS

    width = 3 * SCHEMA_BLOCK_COLUMNS + 5
    frame = pl.DataFrame({f"x{i}": [0.0, 1.0, 2.0, 3.0] for i in range(width)}).with_columns(
        pl.Series("y", ["a", "b", "a", "b"]))
    _, contract, _ = validate_snapshot(write_snapshot(frame), "fp", "y", None, [], [], None, ENFORCE, None)
    broken = [0, SCHEMA_BLOCK_COLUMNS + 1, width - 1]  # first, second and last block
    bad = frame.with_columns(pl.lit(100.0).alias(f"x{i}") for i in broken)
    _, violations = check_frame(bad, contract, ENFORCE)
    assert sorted(v["column"] for v in violations) == sorted(f"x{i}" for i in broken)
    assert all(v["failing_rows"] == 4 for v in violations)


def test_nan_in_a_float_column_counts_as_missing(write_snapshot):
    frame = pl.DataFrame({"x": [1.0, float("nan"), 3.0, 4.0, 5.0, 6.0], "y": ["a", "b"] * 3})
    checked, contract, report = validate_snapshot(write_snapshot(frame), "fp", "y", None, [], [], None, ENFORCE, None)
    assert report["violations"] == []
    assert contract["columns"]["x"]["nullable"] is True
    assert checked.get_column("x").null_count() == 1 and checked.get_column("x").is_nan().sum() == 0


def test_nan_as_missing_rewrites_only_the_float_columns_holding_nan():
    from tasks.validate import nan_as_missing

    frame = pl.DataFrame({"a": [1.0, float("nan"), 3.0], "b": [0.5, 1.5, None], "n": [1, 2, 3], "s": ["x", "y", "z"]})
    out = nan_as_missing(frame)
    assert out.get_column("a").to_list() == [1.0, None, 3.0]
    assert out.select("b", "n", "s").equals(frame.select("b", "n", "s"))
    untouched = pl.DataFrame({"b": [0.5, None], "n": [1, 2]})
    assert nan_as_missing(untouched) is untouched  # nothing to rewrite: the very same frame


def test_leakage_flags_copies_of_the_target_even_when_they_differ_only_late():
    """A column equal to the target row by row (as text, so 1 and "1" match) is flagged; one that differs first
    after the rows compared up front is not, nor is the target itself or a skipped column."""
    from tasks.validate import leaking_columns

    label = pl.Series("y", [i % 3 for i in range(3000)], dtype=pl.Int64)
    late = label.to_list()
    late[2500] = 7
    frame = pl.DataFrame({"y": label, "copy": label.cast(pl.String), "late": late, "as_float": label.cast(pl.Int8),
                          "other": [1] * 3000, "id": label})
    assert leaking_columns(frame, "y", ["id"]) == ["copy", "as_float"]


def test_a_first_run_validates_without_importing_pandera(people, tmp_path):
    """A contract inferred from the very data it is checked on holds by construction: the first run only casts,
    and does not pay pandera's import (pandas under it, about 0.5 s); a later run checks with pandera."""
    import subprocess
    import sys
    from pathlib import Path

    snapshot = tmp_path / "snap.parquet"
    people.write_parquet(snapshot)
    code = ("import sys; from tasks.validate import check_frame, validate_snapshot; from trainpipe.spec import "
            "ValidationSpec; import polars as pl\n"
            f"frame, contract, _ = validate_snapshot({str(snapshot)!r}, 'fp', 'label', None, ['id'], [], None, "
            "ValidationSpec(), None)\n"
            "print('pandera' in sys.modules)\n"
            "_, found = check_frame(frame.with_columns(pl.lit(10**9).alias('age')), contract, ValidationSpec())\n"
            "print('pandera' in sys.modules, sorted({v['column'] for v in found}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["False", "True ['age']"]
