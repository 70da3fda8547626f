"""One Optuna study in the PostgreSQL server on this machine, shared by two OS processes at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest

from tasks.features import fit_transform
from trainpipe import storage
from trainpipe.results import Matrices
from trainpipe.spec import FeatureSpec, parse_spec
from trainpipe.transform import matrix_frame

POSTGRES = os.environ.get("TRAINPIPE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
WORKER = Path(__file__).with_name("tune_worker.py")
TARGET = 12


@pytest.fixture
def matrices(tmp_path: Path) -> Matrices:
    """Binary train/valid matrices of 3,000 rows, written as the features stage writes them."""
    rng = np.random.default_rng(11)
    n = 3000
    x = rng.normal(size=(n, 4))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.7, size=n) > 0, "yes", "no")
    frame = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "y": y})
    parts = {"train": frame[:2000], "valid": frame[2000:]}
    transform = fit_transform(parts["train"], "y", "binary", ["no", "yes"], [], FeatureSpec())
    uris = {}
    for name, part in parts.items():
        uris[name] = str(tmp_path / "features" / f"{name}.parquet")
        storage.write_parquet(matrix_frame(part, transform, name), uris[name])
    return Matrices(uris=uris, transform_uri=str(tmp_path / "features" / "transform.json"),
                    features=transform["features"], feature_types=transform["feature_types"], dropped=[],
                    fingerprint=uuid.uuid4().hex, stage_key="k")


@pytest.fixture
def study_name():
    name = f"trainpipe-test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=POSTGRES)
    except KeyError:
        pass


def make_spec(tmp_path: Path, study_name: str, tag: str, trials: int = TARGET):
    return parse_spec({"name": "shared", "data": {"uris": ["unused.csv"]}, "target": "y",
                       "artifacts": str(tmp_path / f"art-{tag}"), "seed": 3,
                       "xgboost": {"num_boost_round": 300, "early_stopping_rounds": 30, "nthread": 2},
                       "tuning": {"trials": trials, "parallelism": 2, "storage": POSTGRES, "study_name": study_name}})


def start_worker(tmp_path: Path, matrices: Matrices, study_name: str, tag: str,
                 meet: int = 0) -> tuple[subprocess.Popen, Path]:
    """A tuning worker process; with `meet`, its first trial waits until the study holds that many trials."""
    spec = make_spec(tmp_path, study_name, tag)
    spec_path, matrices_path, out = (tmp_path / f"spec-{tag}.json", tmp_path / f"matrices-{tag}.json",
                                     tmp_path / f"out-{tag}.json")
    spec_path.write_text(spec.model_dump_json())
    matrices_path.write_text(matrices.model_dump_json())
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the test session's Prefect server
    if meet:
        env["TRAINPIPE_TEST_MEET"] = str(meet)
    process = subprocess.Popen([sys.executable, str(WORKER), str(spec_path), str(matrices_path), str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, out


def finish(process: subprocess.Popen, out: Path) -> dict:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return json.loads(out.read_text())


def test_two_processes_share_one_study_without_losing_or_repeating_trials(tmp_path, matrices, study_name):
    # Each worker's first batch waits for the other's (2 + 2 trials asked): a 12-trial study on 3,000 rows
    # takes about a second, less than the spread of two processes' start-up, and without the meeting one
    # process could finish it alone (this failed 1 run in 4 before it was there).
    a, out_a = start_worker(tmp_path, matrices, study_name, "a", meet=4)
    b, out_b = start_worker(tmp_path, matrices, study_name, "b", meet=4)
    mine_a = finish(a, out_a)["summary"]["trials_this_run"]
    mine_b = finish(b, out_b)["summary"]["trials_this_run"]

    study = optuna.load_study(study_name=study_name, storage=POSTGRES)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))           # no number lost or given twice
    assert not set(mine_a) & set(mine_b)                         # no trial run by both processes
    assert sorted(mine_a + mine_b) == numbers                    # every trial in the study ran in one of them
    assert mine_a and mine_b                                     # both took part
    assert all(t.state.is_finished() for t in trials)            # nothing left RUNNING
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    # the budget holds, give or take one batch asked by both processes in the same instant
    assert TARGET <= len(finished) <= TARGET + 2
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # same seed, no repeated trial
    spans_a = [(t.datetime_start, t.datetime_complete) for t in trials if t.number in mine_a]
    spans_b = [(t.datetime_start, t.datetime_complete) for t in trials if t.number in mine_b]
    assert any(sa < eb and sb < ea for sa, ea in spans_a for sb, eb in spans_b)  # they really ran at once

    # a re-run of the finished study (a fresh artifact store, so nothing is reused from it) adds no trial
    c, out_c = start_worker(tmp_path, matrices, study_name, "c")
    rerun = finish(c, out_c)["summary"]
    assert rerun["trials_this_run"] == []
    assert len(optuna.load_study(study_name=study_name, storage=POSTGRES).trials) == len(trials)
    assert rerun["best_trial"] == study.best_trial.number
    assert rerun["storage"] == POSTGRES


def test_a_trial_left_running_by_a_dead_process_is_failed_and_replaced(tmp_path, matrices, study_name):
    import psycopg

    from flows.tune import tuning_subflow

    storage_ = optuna.storages.RDBStorage(POSTGRES, heartbeat_interval=10, grace_period=60)
    study = optuna.create_study(study_name=study_name, storage=storage_, direction="minimize")
    dead = study.ask()
    storage_.record_heartbeat(dead._trial_id)
    with psycopg.connect(POSTGRES) as connection:
        connection.execute("UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '1 hour' "
                           "WHERE trial_id = %s", (dead._trial_id,))

    result = tuning_subflow(2)(make_spec(tmp_path, study_name, "x", trials=3), matrices, "binary", None)

    trials = optuna.load_study(study_name=study_name, storage=POSTGRES).trials
    assert trials[dead.number].state.name == "FAIL"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    assert result.summary["trials_this_run"] == [t.number for t in trials if t.number != dead.number]


def test_workers_starting_together_on_a_new_database_all_open_the_study_storage():
    """Six workers open one PostgreSQL database that has no Optuna tables yet: they race to create them, and
    the losers try again instead of failing the run (before: 5 of 6 failed with a unique violation)."""
    import threading

    import psycopg

    from tasks.tune.study import open_storage
    from trainpipe.spec import TuningSpec

    server = POSTGRES.rsplit("/", 1)[0]
    name = f"trainpipe_race_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_storage(TuningSpec(trials=1, storage=f"{server}/{name}"), "unused", "s")
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    try:
        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    assert errors == []
