"""Hand-written rows and small helpers shared by the unit tests."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import numpy as np
import polars as pl
import pytest

from trainpipe import storage


@pytest.fixture
def people() -> pl.DataFrame:
    """Six rows with every column kind; one row has a null target, one a null age."""
    return pl.DataFrame(
        {
            "id": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "age": [30, 40, None, 50, 60, 20],
            "income": [1.0, 2.0, 3.0, 4.0, 5.0, 10.0],
            "city": ["a", "b", "a", "c", "b", "a"],
            "member": [True, False, True, True, False, False],
            "joined": [dt.date(2024, 1, d) for d in range(1, 7)],
            "seen": [dt.datetime(2024, 1, d, 3) for d in range(1, 7)],
            "label": ["yes", "no", "yes", None, "no", "yes"],
        }
    )


@pytest.fixture
def write_snapshot(tmp_path) -> Callable[[pl.DataFrame, str], str]:
    """Write a frame as a Parquet snapshot under tmp_path; returns its URI."""

    def write(frame: pl.DataFrame, name: str = "snapshot.parquet") -> str:
        uri = str(tmp_path / name)
        storage.write_parquet(frame, uri)
        return uri

    return write


def make_rows(n: int, task: str, seed: int = 0) -> pl.DataFrame:
    """A deterministic learnable frame: numeric x1, noise x2, category c, id rid and target y."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    c = rng.choice(["u", "v", "w"], size=n)
    signal = x1 + (c == "u") + rng.normal(scale=0.5, size=n)
    if task == "binary":
        y: Any = np.where(signal > 0.5, "pos", "neg")
    elif task == "multiclass":
        y = np.array(["a", "b", "c"])[np.digitize(signal, [0.0, 1.0])]
    else:
        y = 2.0 * signal
    return pl.DataFrame({"rid": [f"r{i}" for i in range(n)], "x1": x1, "x2": x2, "c": c, "y": y})


@pytest.fixture
def rows_for() -> Callable[..., pl.DataFrame]:
    return make_rows
