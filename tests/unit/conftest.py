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


@pytest.fixture
def prepared(rows_for) -> Callable[..., dict[str, Any]]:
    """Rows of a task, split 200/100/100, with a fitted transform and the feature matrices of each part."""
    from tasks.features import fit_transform
    from trainpipe.spec import FeatureSpec
    from trainpipe.transform import matrix_frame

    def prepare(task: str, n: int = 400, seed: int = 0) -> dict[str, Any]:
        frame = make_rows(n, task, seed)
        parts = {"train": frame[: n // 2], "valid": frame[n // 2 : 3 * n // 4], "test": frame[3 * n // 4 :]}
        classes = None if task == "regression" else sorted(set(frame.get_column("y").to_list()))
        transform = fit_transform(parts["train"], "y", task, classes, ["rid"], FeatureSpec(min_category_count=1))
        matrices = {k: matrix_frame(v, transform, k) for k, v in parts.items()}
        return {"frame": frame, "parts": parts, "transform": transform, "matrices": matrices, "classes": classes}

    return prepare
