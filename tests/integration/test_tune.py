"""Tuning inside the training flow on a real Prefect server: reproducible, recorded, reused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flows.train import train_flow
from trainpipe import storage
from trainpipe.errors import TuningError
from trainpipe.spec import parse_spec


def make_spec(data: Path, artifacts: Path, **tuning):
    return parse_spec({"name": "penguins", "data": {"uris": [str(data)]}, "target": "species",
                       "artifacts": str(artifacts), "seed": 5,
                       "xgboost": {"num_boost_round": 150, "early_stopping_rounds": 15},
                       "tuning": {"trials": 8, "parallelism": 2, **tuning}})


def manifest_of(result: dict) -> dict:
    return json.loads(Path(result["uri"], "manifest.json").read_text())


def leaderboard_artifacts() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tuning-leaderboard"])))

    return asyncio.run(read())


def test_tuned_runs_are_reproducible_and_recorded(tmp_path: Path, penguins_csv: Path):
    first = train_flow(make_spec(penguins_csv, tmp_path / "one"))
    second = train_flow(make_spec(penguins_csv, tmp_path / "two"))  # another store: tuned again from scratch

    one, two = manifest_of(first), manifest_of(second)
    assert not second["stages"]["tune"]["cached"]
    assert one["tuning"]["performed"] and one["tuning"]["best_params"] == two["tuning"]["best_params"]
    assert one["tuning"]["best_value"] == two["tuning"]["best_value"]
    assert one["model_sha256"] == two["model_sha256"]

    tuning = one["tuning"]
    assert tuning["storage"] == "in-memory" and tuning["seed"] == 5 and tuning["sampler"].startswith("TPESampler")
    assert tuning["counts"]["complete"] + tuning["counts"]["pruned"] == 8 and tuning["counts"]["fail"] == 0
    # the final model was refit with the best parameters
    for name, value in tuning["best_params"].items():
        assert one["training"]["params"][name] == value
    assert one["training"]["params"]["nthread"] >= 1
    # the best trial trained on every training row: its early stopping chose the rounds, trained once (a refit on
    # training + validation rows, penguins being small), not early-stopped again on the same data
    assert tuning["trial_rows"]["used"] == tuning["trial_rows"]["of"] and not tuning["best_cut_by_timeout"]
    assert one["training"]["rounds_from_trial"] == tuning["best_trial"]
    assert one["training"]["rounds_trained"] == tuning["best_iteration"] + 1
    assert one["training"]["refit_on_train_and_valid"]
    assert one["training"]["best_validation_score"] == tuning["best_value"]

    for filename in ("tuning_leaderboard.json", "tuning_history.svg"):
        path = Path(first["uri"], filename)
        assert storage.sha256_bytes(path.read_bytes()) == one["files"][filename]
    board = json.loads(Path(first["uri"], "tuning_leaderboard.json").read_text())
    assert len(board["trials"]) == 8 and board["trials"][0]["trial"] == tuning["best_trial"]
    assert set(board["importances"]) == set(tuning["best_params"])
    assert Path(first["uri"], "tuning_history.svg").read_text().startswith("<svg")

    tables = [a for a in leaderboard_artifacts() if tuning["study_name"] in (a.description or "")]
    assert tables and tables[0].type == "table" and len(json.loads(tables[0].data)) == 8


def test_rerun_reuses_tuning_and_model(tmp_path: Path, penguins_csv: Path):
    spec = make_spec(penguins_csv, tmp_path / "art", trials=4)
    first = train_flow(spec)
    again = train_flow(spec)
    assert again["stages"]["tune"]["cached"] and again["stages"]["train"]["cached"]
    assert again["reused"] and again["version"] == first["version"]

    other = train_flow(make_spec(penguins_csv, tmp_path / "art", trials=5))  # other tuning: a new model
    assert not other["stages"]["tune"]["cached"] and not other["stages"]["train"]["cached"]
    assert manifest_of(other)["tuning"]["counts"]["complete"] + manifest_of(other)["tuning"]["counts"]["pruned"] == 5


def test_all_trials_failing_fails_the_run_and_publishes_nothing(tmp_path: Path, penguins_csv: Path):
    spec = make_spec(penguins_csv, tmp_path / "art", trials=2, search_space={"subsample": 3.0})
    with pytest.raises(TuningError, match="no trial completed"):
        train_flow(spec)
    assert not (tmp_path / "art" / "models").exists()


def test_cli_trials_option_tunes_and_reports(tmp_path: Path, penguins_csv: Path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "trainpipe", "train", "--data", str(penguins_csv), "--target",
                           "species", "--artifacts", str(tmp_path / "art"), "--trials", "3"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tuning: study penguins-" in done.stdout and "(in-memory)" in done.stdout
    manifest = json.loads(next((tmp_path / "art" / "models" / "penguins" / "versions").glob("*/manifest.json"))
                          .read_text())
    assert manifest["tuning"]["trials_asked"] == 3 and manifest["tuning"]["performed"]
