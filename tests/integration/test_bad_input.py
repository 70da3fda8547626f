"""Bad input through the real CLI: each case exits non-zero with one message naming the file and the
column, rows or field at fault, no traceback, and nothing published (no committed version, no audit record).

The CLI runs as a subprocess against the session's Prefect server (conftest), so no run pays for its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return subprocess.run([sys.executable, "-m", "trainpipe", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def train(data: Path, target: str, artifacts: Path, *extra: str) -> subprocess.CompletedProcess:
    return run("train", "--data", str(data), "--target", target, "--artifacts", str(artifacts), "--json", *extra)


def published(artifacts: Path) -> list[str]:
    """Committed versions and audit records anywhere under the artifact store."""
    found = [str(p) for p in artifacts.glob("models/*/versions/*/_COMMITTED")]
    return found + [str(p) for p in artifacts.glob("audit/*/*.json")]


def frame(rows: int = 60) -> pl.DataFrame:
    """A small regression frame: two numeric features, a category, target y."""
    i = pl.int_range(rows, eager=True)
    return pl.DataFrame({"x1": (i * 7 % 13).cast(pl.Float64), "x2": (i % 5).cast(pl.Float64),
                         "city": pl.Series(["ams", "ber", "cph"] * (rows // 3)),
                         "y": (i * 7 % 13 * 2.0 + i % 5)})


def csv_text(df: pl.DataFrame) -> str:
    return df.write_csv()


def assert_fails_clearly(done: subprocess.CompletedProcess, artifacts: Path, *names: str) -> None:
    print("exit", done.returncode, "|", done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for name in names:
        assert name in done.stderr, (name, done.stderr)
    assert not published(artifacts), published(artifacts)


def values_with(column: str, rows: dict[int, str]) -> str:
    """The frame as CSV with some cells of one column replaced by raw text."""
    df = frame().with_columns(pl.col(column).cast(pl.String))
    for r, v in rows.items():
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == r).then(pl.lit(v)).otherwise(pl.col(column))
                             .alias(column))
    return csv_text(df)


# name -> (file name, file bytes, target, strings stderr must hold besides the file name)
CASES: dict[str, tuple[str, bytes, str, tuple[str, ...]]] = {
    "duplicate_columns": ("dup.csv", b"x1,x1,city,y\n" + b"".join(b"%d,%d,a,%d\n" % (i, i % 3, i) for i in range(40)),
                          "y", ("duplicate", "'x1'")),
    "inf_in_target": ("inf_target.csv", values_with("y", {3: "inf", 9: "-inf"}).encode(), "y", ("column 'y'", "inf", "rows 4, 10")),
    "float32_overflow_feature": ("big.csv", values_with("x1", {5: "1e308"}).encode(), "y", ("column 'x1'", "1e+308", "rows 6")),
    "inf_in_feature": ("inf_feature.csv", values_with("x2", {2: "inf"}).encode(), "y", ("column 'x2'", "inf", "rows 3")),
    "empty_file": ("empty.csv", b"", "y", ()),
    "header_only": ("header.csv", b"x1,x2,city,y\n", "y", ("no rows",)),
    "wrong_delimiter": ("semi.csv", csv_text(frame()).replace(",", ";").encode(), "y", ("'y'", "separator")),
    "ragged_rows": ("ragged.csv", b"x1,x2,y\n1,2,3\n4,5,6,7,8\n" + b"1,2,3\n" * 30, "y", ("data row 2 has 5 fields",)),
    "invalid_utf8": ("latin1.csv", b"x1,city,y\n" + b"".join(b"%d,M\xfcnchen,%d\n" % (i, i) for i in range(30)),
                     "y", ()),
    "corrupt_parquet": ("corrupt.parquet", b"PAR1" + bytes(range(256)) * 4, "y", ()),
    "target_absent": ("absent.csv", csv_text(frame()).encode(), "price", ("'price'",)),
    "target_all_null": ("nulls.csv", csv_text(frame().with_columns(y=pl.lit(None, pl.Float64))).encode(), "y",
                        ("'y'", "null")),
    "one_class": ("oneclass.csv", csv_text(frame().with_columns(y=pl.lit("yes"))).encode(), "y", ("'y'", "1 distinct")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_fails_clearly(case: str, tmp_path: Path):
    name, content, target, needles = CASES[case]
    data = tmp_path / name
    data.write_bytes(content)
    artifacts = tmp_path / "art"
    assert_fails_clearly(train(data, target, artifacts), artifacts, str(data), *needles)


def test_truncated_parquet_fails_clearly(tmp_path: Path):
    whole = tmp_path / "whole.parquet"
    frame().write_parquet(whole)
    data = tmp_path / "truncated.parquet"
    data.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    artifacts = tmp_path / "art"
    assert_fails_clearly(train(data, "y", artifacts), artifacts, str(data))


def test_uri_that_does_not_exist(tmp_path: Path):
    data = tmp_path / "nowhere" / "data.csv"
    artifacts = tmp_path / "art"
    assert_fails_clearly(train(data, "y", artifacts), artifacts, str(data), "not found")


@pytest.mark.parametrize(("text", "field"), [("xgboost: {max_depht: 3}", "xgboost.max_depht"),
                                               ("task: regresion", "task")])
def test_bad_spec_names_the_field(text: str, field: str, tmp_path: Path):
    data = tmp_path / "d.csv"
    frame().write_csv(data)
    artifacts = tmp_path / "art"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: d\ndata: {{uris: [{data}]}}\ntarget: y\nartifacts: {artifacts}\n{text}\n")
    done = run("train", str(spec))
    assert done.returncode == 2, done.stderr
    assert_fails_clearly(done, artifacts, str(spec), field)


def test_mixed_date_formats_are_read_as_text_and_said(tmp_path: Path):
    dates = ["2024-01-02", "02/03/2024"] * 30
    data = tmp_path / "dates.csv"
    frame().with_columns(day=pl.Series(dates)).write_csv(data)
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert done.returncode == 0, done.stderr
    assert "day" in done.stderr and "text" in done.stderr  # says what it did
    manifest = json.loads((next(artifacts.glob("models/*/versions/*/manifest.json"))).read_text())
    assert manifest["data"]["sources"][0]["uri"] == str(data)


def test_constant_regression_target_is_not_champion(tmp_path: Path):
    data = tmp_path / "const.csv"
    frame().with_columns(y=pl.lit(5.0)).write_csv(data)
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode == 0:
        assert not list(artifacts.glob("audit/*/*.json")) or '"champion"' not in "".join(
            p.read_text() for p in artifacts.glob("audit/*/*.json") if "alias_moved" in p.read_text())
    else:
        assert_fails_clearly(done, artifacts, str(data), "'y'")


def test_column_identical_to_target_trains_with_a_leakage_warning(tmp_path: Path):
    data = tmp_path / "leak.csv"
    frame().with_columns(y_copy=pl.col("y")).write_csv(data)
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["leakage_warning"] == ["y_copy"]
    assert "'y_copy'" in done.stderr and "leakage" in done.stderr
    card = next(artifacts.glob("models/*/versions/1/*.md")).read_text()
    assert "target leakage" in card and "`y_copy`" in card
