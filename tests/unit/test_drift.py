"""tasks.drift: profiles, PSI, null-rate and category changes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.drift import data_profile, drift_report, psi


def frame(n: int = 2000, shift: float = 0.0, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"x": rng.normal(loc=shift, size=n), "c": rng.choice(["a", "b", "c"], size=n),
                         "y": rng.integers(0, 2, n)})


def test_psi_basics():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25


def test_same_distribution_is_stable_and_shifted_one_is_large():
    reference = data_profile(frame(seed=0), skip=["y"])
    same = drift_report(reference, frame(seed=1), skip=["y"])
    moved = drift_report(reference, frame(shift=1.0, seed=1), skip=["y"])

    assert same["columns"]["x"]["shift"] == "stable" and same["large_shifts"] == []
    assert moved["columns"]["x"]["shift"] == "large" and moved["large_shifts"] == ["x"]
    assert list(moved["columns"])[0] == "x"  # largest shift first
    assert "y" not in moved["columns"]


def test_categories_nulls_and_columns():
    reference = data_profile(frame(), skip=["y"])
    now = frame().with_columns(
        pl.when(pl.col("c") == "c").then(pl.lit("d")).otherwise(pl.col("c")).alias("c"),
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(None).otherwise(pl.col("x")).alias("x"),
        pl.lit(1).alias("extra"),
    )
    report = drift_report(reference, now, skip=["y"])

    assert report["columns"]["c"]["new_categories"] == ["d"]
    assert report["columns"]["c"]["vanished_categories"] == ["c"]
    assert report["columns"]["x"]["null_rate_change"] == pytest.approx(0.25)
    assert report["new_columns"] == ["extra"]
    gone = drift_report(reference, now.drop("c"), skip=["y"])
    assert gone["columns"]["c"] == {"missing_now": True} and "c" in gone["large_shifts"]


def test_dates_are_binned_by_value_and_random_halves_do_not_drift():
    import datetime as dt

    import numpy as np

    from tasks.drift import PROFILE_ROWS, data_profile, drift_report

    rng = np.random.default_rng(1)
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 1500, size=2 * PROFILE_ROWS + 10)]
    frame = pl.DataFrame({"day": days, "x": rng.normal(size=len(days))})
    first, second = frame.head(PROFILE_ROWS + 5), frame.tail(PROFILE_ROWS + 5)
    profile = data_profile(first, [])
    assert profile["columns"]["day"]["kind"] == "numeric"
    assert profile["rows"] == PROFILE_ROWS + 5 and profile["profiled_rows"] == PROFILE_ROWS
    report = drift_report(profile, second, [])
    assert report["rows_now"] == PROFILE_ROWS + 5
    assert all(c["psi"] < 0.01 for c in report["columns"].values()), report["columns"]


def test_a_champion_profile_with_dates_as_categories_still_compares():
    import datetime as dt

    from tasks.drift import column_drift, column_profile

    old = pl.Series("day", [dt.date(2024, 1, d) for d in (1, 1, 2, 3)])
    reference = column_profile(old.cast(pl.String))  # how a date column was profiled before
    assert reference["kind"] == "categorical"
    drift = column_drift(reference, old)
    assert drift["psi"] < 1.0 and "new_categories" in drift


def test_in_memory_and_out_of_core_profiles_sample_the_same_rows(tmp_path):
    """A part larger than PROFILE_ROWS is sampled to the same rows whether it is in memory or read slice by slice."""
    from tasks.drift import PROFILE_ROWS, profile_rows
    from trainpipe.outofcore import sample_rows

    n = PROFILE_ROWS + 1234
    frame = pl.DataFrame({"i": np.arange(n), "x": np.random.default_rng(3).normal(size=n)})
    uri = str(tmp_path / "train.parquet")
    frame.write_parquet(uri, row_group_size=50_000)
    in_memory = profile_rows(frame)
    assert in_memory.height == PROFILE_ROWS and in_memory.get_column("i").is_sorted()
    assert in_memory.equals(sample_rows(uri, n, PROFILE_ROWS))
