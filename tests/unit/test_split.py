"""tasks.split: sizes, determinism per seed, stratification, time order."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tasks.split import resolve_method, split_frame
from trainpipe.errors import DataError
from trainpipe.spec import SplitSpec

RANDOM = SplitSpec(method="random")


@pytest.fixture
def rows() -> pl.DataFrame:
    """100 rows, 70 of class 'a' then 30 of 'b', timestamps in a shuffled order."""
    n = 100
    return pl.DataFrame(
        {
            "i": list(range(n)),
            "y": ["a"] * 70 + ["b"] * 30,
            "t": [dt.datetime(2024, 1, 1) + dt.timedelta(days=(i * 37) % n) for i in range(n)],
            "v": [float(i % 7) for i in range(n)],
        }
    )


def ids(part: pl.DataFrame) -> list[int]:
    return part.get_column("i").to_list()


def test_random_split_sizes_and_disjoint_cover(rows):
    parts = split_frame(rows, RANDOM, "y", "binary", seed=1)
    assert list(parts) == ["train", "valid", "test"]
    # test: ceil(100 * 0.2) = 20; valid: ceil(80 * 0.15) = 12
    assert {k: v.height for k, v in parts.items()} == {"train": 68, "valid": 12, "test": 20}
    all_ids = ids(parts["train"]) + ids(parts["valid"]) + ids(parts["test"])
    assert sorted(all_ids) == list(range(100))
    assert parts["train"].columns == rows.columns


def test_custom_fractions(rows):
    spec = SplitSpec(method="random", test_fraction=0.5, validation_fraction=0.1)
    parts = split_frame(rows, spec, "y", "binary", seed=1)
    assert {k: v.height for k, v in parts.items()} == {"train": 45, "valid": 5, "test": 50}


def test_parts_keep_original_row_order(rows):
    parts = split_frame(rows, RANDOM, "y", "binary", seed=3)
    for part in parts.values():
        assert ids(part) == sorted(ids(part))


@pytest.mark.parametrize("method", ["random", "stratified"])
def test_same_seed_same_split(rows, method):
    spec = SplitSpec(method=method)
    first = split_frame(rows, spec, "y", "binary", seed=11)
    second = split_frame(rows, spec, "y", "binary", seed=11)
    for name in first:
        assert first[name].equals(second[name])


@pytest.mark.parametrize("method", ["random", "stratified"])
def test_other_seed_other_split(rows, method):
    spec = SplitSpec(method=method)
    first = split_frame(rows, spec, "y", "binary", seed=11)
    second = split_frame(rows, spec, "y", "binary", seed=12)
    assert ids(first["test"]) != ids(second["test"])
    assert first["test"].height == second["test"].height


def test_stratified_keeps_class_shares(rows):
    parts = split_frame(rows, SplitSpec(method="stratified"), "y", "binary", seed=5)

    def counts(part: pl.DataFrame) -> dict[str, int]:
        return dict(part.get_column("y").value_counts().iter_rows())

    # per class: a (70) -> test 14, valid ceil(56 * .15) = 9; b (30) -> test 6, valid ceil(24 * .15) = 4
    assert counts(parts["test"]) == {"a": 14, "b": 6}
    assert counts(parts["valid"]) == {"a": 9, "b": 4}
    assert counts(parts["train"]) == {"a": 47, "b": 20}


def test_stratified_is_the_default_for_classification(rows):
    assert resolve_method(SplitSpec(), "binary") == "stratified"
    assert resolve_method(SplitSpec(), "multiclass") == "stratified"
    assert resolve_method(SplitSpec(), "regression") == "random"
    assert resolve_method(SplitSpec(method="random"), "binary") == "random"
    default = split_frame(rows, SplitSpec(), "y", "binary", seed=5)
    stratified = split_frame(rows, SplitSpec(method="stratified"), "y", "binary", seed=5)
    assert ids(default["test"]) == ids(stratified["test"])


def test_stratified_rare_class_stays_in_training(rows):
    frame = rows.with_columns(pl.when(pl.col("i") < 2).then(pl.lit("rare")).otherwise(pl.col("y")).alias("y"))
    parts = split_frame(frame, SplitSpec(method="stratified"), "y", "multiclass", seed=5)
    assert parts["train"].filter(pl.col("y") == "rare").height == 2


def test_stratified_regression_is_an_error(rows):
    with pytest.raises(DataError, match="stratified needs a classification task"):
        split_frame(rows, SplitSpec(method="stratified"), "v", "regression", seed=1)


def test_too_few_rows_is_an_error(rows):
    with pytest.raises(DataError, match="only 19 rows"):
        split_frame(rows.head(19), RANDOM, "y", "binary", seed=1)
    assert sum(p.height for p in split_frame(rows.head(20), RANDOM, "y", "binary", seed=1).values()) == 20


def test_time_split_puts_latest_rows_in_test(rows):
    spec = SplitSpec(method="time", time_column="t")
    parts = split_frame(rows, spec, "y", "binary", seed=1)
    assert {k: v.height for k, v in parts.items()} == {"train": 68, "valid": 12, "test": 20}
    assert parts["test"].get_column("t").min() > parts["valid"].get_column("t").max()
    assert parts["valid"].get_column("t").min() > parts["train"].get_column("t").max()
    # seed does not matter for a time split
    other = split_frame(rows, spec, "y", "binary", seed=2)
    assert ids(other["test"]) == ids(parts["test"])


def test_time_split_with_null_times_names_the_column(rows):
    frame = rows.with_columns(pl.when(pl.col("i") == 3).then(None).otherwise(pl.col("t")).alias("t"))
    with pytest.raises(DataError, match="time column 't' has 1 null value"):
        split_frame(frame, SplitSpec(method="time", time_column="t"), "y", "binary", seed=1)


@pytest.mark.parametrize("split", [RANDOM, SplitSpec(method="stratified"), SplitSpec(method="time", time_column="t")])
def test_a_stored_frame_is_split_part_by_part_into_the_same_parts_as_in_memory(rows, split, tmp_path):
    from tasks.split import iter_stored_parts

    uri = str(tmp_path / "validated.parquet")
    rows.write_parquet(uri, row_group_size=16)  # several row groups: the part masks must line up across them
    stored = list(iter_stored_parts(uri, split, "y", "binary", 5))
    in_memory = split_frame(rows, split, "y", "binary", seed=5)
    assert [name for name, _ in stored] == ["train", "valid", "test"]
    for name, part in stored:
        assert part.equals(in_memory[name]), name
    assert sorted(sum((ids(part) for _, part in stored), [])) == list(range(100))
