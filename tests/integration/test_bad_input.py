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
    "spaces_around_names": ("padded.csv", csv_text(frame()).replace("x1,x2,city,y", "x1, x2,city,y ", 1).encode(), "y",
                            ("' x2'", "'y '", "spaces around them")),
    "line_of_spaces": ("spaces.csv", csv_text(frame()).replace("\n", "\n   \n", 3).encode(), "y",
                       ("data row 1 has 1 fields, the header 4",)),
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


def test_a_real_file_with_blank_lines_crlf_and_a_bom_trains_on_its_rows_alone(tmp_path: Path):
    """Blank lines (between rows and at the end) read by polars as rows of nulls would have been dropped as
    null-target rows with a warning; a byte-order mark must not reach the first column's name."""
    lines = csv_text(frame()).splitlines()
    text = "\ufeff" + "\r\n".join(lines[:20] + [""] + lines[20:40] + ["", ""] + lines[40:]) + "\r\n\r\n\r\n"
    data = tmp_path / "blanks.csv"
    data.write_bytes(text.encode("utf-8"))
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert done.returncode == 0, done.stderr
    assert "null-target" not in done.stderr and "null target" not in done.stderr, done.stderr
    manifest = json.loads((next(artifacts.glob("models/*/versions/*/manifest.json"))).read_text())
    assert manifest["data"]["dropped_null_target"] == 0
    assert sum(manifest["data"]["rows"].values()) == 60
    assert "x1" in manifest["features"]["names"] and not any("\ufeff" in n for n in manifest["features"]["names"])


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


# --- against an existing version: the data contract of the first good run --------------------------------

def records(artifacts: Path) -> list[str]:
    return sorted(published(artifacts))


@pytest.fixture()
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """A good first run of model `m` (version 1, its contract) on the small frame; (artifacts, data file)."""
    data = tmp_path / "good.csv"
    frame().write_csv(data)
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts, "--name", "m")
    assert done.returncode == 0, done.stderr
    return artifacts, data


def second_run(trained: tuple[Path, Path], name: str, text: str) -> tuple[subprocess.CompletedProcess, Path]:
    artifacts, good = trained
    data = good.parent / name
    data.write_text(text)
    return train(data, "y", artifacts, "--name", "m"), data


def assert_second_run_fails_clearly(done: subprocess.CompletedProcess, before: list[str], artifacts: Path,
                                    *needles: str) -> None:
    print("exit", done.returncode, "|", done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)
    assert records(artifacts) == before  # no new version, alias move or audit record


def test_strings_in_a_numeric_column_against_the_contract(trained: tuple[Path, Path]):
    before = records(trained[0])
    done, data = second_run(trained, "strings.csv", values_with("x1", {4: "n/a?", 11: "twelve"}))
    assert done.returncode == 4, done.stderr
    assert_second_run_fails_clearly(done, before, trained[0], str(data), "'x1'", "twelve")


def test_a_column_that_disappeared_against_the_contract(trained: tuple[Path, Path]):
    before = records(trained[0])
    done, data = second_run(trained, "no_x2.csv", csv_text(frame().drop("x2")))
    assert done.returncode == 4, done.stderr
    assert_second_run_fails_clearly(done, before, trained[0], str(data), "'x2'")


def test_a_column_that_appeared_is_reported_and_trained(trained: tuple[Path, Path]):
    artifacts, _ = trained
    done, data = second_run(trained, "extra.csv", csv_text(frame().with_columns(x3=pl.col("x1") * 3)))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "'x3'" in done.stderr and "not in the data contract" in done.stderr, done.stderr
    out = json.loads(done.stdout)
    assert out["version"] == 2
    assert "x3" in registry_features(artifacts, 2)


def registry_features(artifacts: Path, version: int) -> list[str]:
    return json.loads((artifacts / "models" / "m" / "versions" / str(version) / "manifest.json").read_text())[
        "features"]["names"]


def test_a_unique_per_row_text_column_is_dropped_with_a_note(tmp_path: Path):
    data = tmp_path / "notes.csv"
    frame().with_columns(note=pl.format("free text {} of row {}", pl.col("x1"), pl.int_range(pl.len()))).write_csv(data)
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = json.loads(done.stdout)
    assert [d["column"] for d in out["dropped_features"]] == ["note"]
    assert "identifier or free text" in out["dropped_features"][0]["reason"]
    assert "not a feature: 'note'" in done.stderr
    manifest = json.loads(next(artifacts.glob("models/*/versions/1/manifest.json")).read_text())
    assert "note" not in manifest["features"]["names"] and {"x1", "x2", "city"} <= set(manifest["features"]["names"])


def test_a_row_with_too_few_fields_fails_clearly(tmp_path: Path):
    lines = csv_text(frame()).splitlines()
    lines[8] = ",".join(lines[8].split(",")[:2])  # data row 8 loses its last two fields
    data = tmp_path / "short.csv"
    data.write_text("\n".join(lines) + "\n")
    artifacts = tmp_path / "art"
    done = train(data, "y", artifacts)
    assert done.returncode == 3, done.stderr
    assert_fails_clearly(done, artifacts, str(data), "data row 8 has 2 fields, the header 4", "too few")


def test_ten_thousand_columns_train_through_the_cli(tmp_path: Path):
    import numpy as np

    rng = np.random.default_rng(0)
    columns = {f"f{i}": rng.random(30).round(3) for i in range(10_000)}
    columns["y"] = (columns["f0"] * 3 + columns["f1"]).round(3)
    data = tmp_path / "wide.csv"
    pl.DataFrame(columns).write_csv(data)
    artifacts = tmp_path / "art"
    spec = tmp_path / "wide.yaml"
    spec.write_text(f"name: wide\ndata: {{uris: [{data}]}}\ntarget: y\nartifacts: {artifacts}\n"
                    "xgboost: {num_boost_round: 10, early_stopping_rounds: 3}\n")
    done = run("train", str(spec), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    out = json.loads(done.stdout)
    manifest = json.loads((artifacts / "models" / "wide" / "versions" / str(out["version"]) / "manifest.json")
                          .read_text())
    assert len(manifest["features"]["names"]) == 10_000
    print("10,000 columns, stage seconds:", {k: v.get("seconds") for k, v in out["stages"].items()})


# --- predict on bad input ----------------------------------------------------------------------------

def predict(artifacts: Path, ref: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    return run("predict", "--model", ref, "--data", str(data), "--out", str(out), "--artifacts", str(artifacts))


@pytest.mark.parametrize("case", ["missing_feature", "string_in_numeric"])
def test_predict_on_bad_input_fails_clearly(case: str, trained: tuple[Path, Path]):
    artifacts, good = trained
    data, out = good.parent / f"{case}.csv", good.parent / f"{case}-scores.csv"
    if case == "missing_feature":
        data.write_text(csv_text(frame().drop("y", "x2")))
        needles: tuple[str, ...] = ("missing required column(s) x2",)
    else:
        data.write_text(values_with("x1", {4: "n/a?", 11: "twelve"}))
        needles = ("column 'x1'", "not a number", "rows 5, 12", "'twelve'")
    before = records(artifacts)
    done = predict(artifacts, "m:1", data, out)
    assert done.returncode == 3, done.stderr
    assert_second_run_fails_clearly(done, before, artifacts, str(data), *needles)
    assert not out.exists()  # no partial output
