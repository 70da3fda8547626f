"""The `trainpipe` command as a user runs it: one JSON object on stdout, clear errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, penguins_csv: Path) -> tuple[Path, dict]:
    """A binary model on penguins whose bill_depth_mm has gaps in training (so it is optional)."""
    folder = tmp_path_factory.mktemp("cli")
    artifacts, data = folder / "art", folder / "penguins.csv"
    frame = pl.read_csv(penguins_csv, null_values="NA")
    frame.with_columns(pl.when(pl.int_range(pl.len()) % 40 == 7).then(None).otherwise(pl.col("bill_depth_mm"))
                       .alias("bill_depth_mm")).write_csv(data)
    done = run("-m", "trainpipe", "train", "--data", str(data), "--target", "sex",
               "--artifacts", str(artifacts), "--json")
    assert done.returncode == 0, done.stderr
    return artifacts, json.loads(done.stdout)


def test_train_json_is_one_object_with_the_contract_keys(trained):
    _, result = trained
    assert {"model", "version", "uri", "task", "metrics", "baseline_metrics"} <= set(result)
    assert result["model"] == "penguins" and result["version"] == 1 and result["task"] == "binary"
    assert set(result["metrics"]) == {"auc", "logloss", "accuracy"} == set(result["baseline_metrics"])


def test_predict_scores_unseen_rows_and_handles_missing_optional_columns(trained, tmp_path: Path, penguins_csv):
    artifacts, _ = trained
    rows = pl.read_csv(penguins_csv, null_values="NA").tail(12).drop("sex")
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("Atlantis"))
                             .otherwise(pl.col("island")).alias("island"))
    data = tmp_path / "new.csv"
    rows.drop("bill_depth_mm").write_csv(data)  # bill_depth_mm had nulls in training: optional
    out = tmp_path / "pred.csv"

    done = run("-m", "trainpipe", "predict", "--model", "penguins:1", "--data", str(data), "--out", str(out),
               "--artifacts", str(artifacts), "--json")

    assert done.returncode == 0, done.stderr
    scored = pl.read_csv(out)
    assert scored.height == 12
    assert set(scored.columns) == {"prediction", "proba_female", "proba_male"}
    assert ((scored["proba_female"] + scored["proba_male"] - 1).abs() < 1e-6).all()


def test_predict_missing_required_column_fails_clearly(trained, tmp_path: Path, penguins_csv):
    artifacts, _ = trained
    data = tmp_path / "new.csv"
    pl.read_csv(penguins_csv, null_values="NA").tail(5).drop("year").write_csv(data)
    out = tmp_path / "pred.csv"

    done = run("-m", "trainpipe", "predict", "--model", "penguins", "--data", str(data), "--out", str(out),
               "--artifacts", str(artifacts))

    assert done.returncode == 3
    assert "missing required column(s) year" in done.stderr
    assert not out.exists()


def test_models_list_and_show(trained):
    artifacts, _ = trained
    listed = run("-m", "trainpipe", "models", "list", "--artifacts", str(artifacts), "--json")
    shown = run("-m", "trainpipe", "models", "show", "penguins:1", "--artifacts", str(artifacts), "--json")
    missing = run("-m", "trainpipe", "models", "show", "penguins:7", "--artifacts", str(artifacts))

    assert [m["model"] for m in json.loads(listed.stdout)] == ["penguins"]
    manifest = json.loads(shown.stdout)
    assert manifest["version"] == 1 and manifest["data"]["dropped_null_target"] == 11
    assert missing.returncode == 5 and "no version 7" in missing.stderr


def test_bad_spec_names_the_field_and_exits_2(tmp_path: Path, penguins_csv: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: p\ndata: {{uris: [{penguins_csv}]}}\ntarget: species\nsplit: {{test_fraction: 1.5}}\n"
                    "xgboost: {max_depht: 3}\n")
    done = run("-m", "trainpipe", "train", str(spec))

    assert done.returncode == 2
    assert "split.test_fraction" in done.stderr and "xgboost.max_depht" in done.stderr


def test_missing_target_column_names_it(tmp_path: Path, penguins_csv: Path):
    done = run("-m", "cli", "train", "--data", str(penguins_csv), "--target", "colour",
               "--artifacts", str(tmp_path / "art"))

    assert done.returncode == 3
    assert "target 'colour'" in done.stderr and "species" in done.stderr
    assert "done    ingest" in done.stderr and "failed  validate" in done.stderr  # the progress lines
    assert "Traceback" not in done.stderr and done.stderr.count("target 'colour'") == 1
    assert not (tmp_path / "art" / "models").exists()


def test_a_run_outside_the_allowed_data_roots_fails_before_reading(tmp_path: Path, penguins_csv: Path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["TRAINPIPE_DATA_ROOTS"] = str(allowed)
    done = subprocess.run([sys.executable, "-m", "trainpipe", "train", "--data", str(penguins_csv), "--target",
                           "species", "--artifacts", str(tmp_path / "art")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "outside the data roots" in done.stderr and str(allowed) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "art" / "models").exists() and not (tmp_path / "art" / "cache" / "ingest").exists()
