"""tasks.tune: search space, batched reproducible search, pruning, failures, timeout, resume, results."""

from __future__ import annotations

import random
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from tasks.tune.results import history_svg, leaderboard, study_summary
from tasks.tune.run import TuningRun
from tasks.tune.space import search_space
from tasks.tune.study import default_study_name, redact_url
from tasks.tune.trial import run_trial, trial_threads
from tasks.train import rounds_from_tuning
from trainpipe import storage
from trainpipe.errors import SpecError, TuningError
from trainpipe.results import Matrices, Tuned
from trainpipe.spec import XGBoostSpec, parse_spec


@pytest.fixture
def matrices(prepared, tmp_path) -> Matrices:
    """Binary train/valid/test matrices written as the features stage would, with its metadata."""
    prep = prepared("binary", n=1200, seed=3)
    uris = {}
    for part, frame in prep["matrices"].items():
        uris[part] = str(tmp_path / "features" / f"{part}.parquet")
        storage.write_parquet(frame, uris[part])
    types = prep["transform"]["feature_types"]
    return Matrices(uris=uris, transform_uri=str(tmp_path / "features" / "transform.json"),
                    features=prep["transform"]["features"], feature_types=types, dropped=[], fingerprint="f" * 64,
                    stage_key="k")


def make_spec(tmp_path, **tuning: Any):
    return parse_spec({
        "name": "tuned", "data": {"uris": ["unused.csv"]}, "target": "y", "artifacts": str(tmp_path / "art"),
        "seed": 7, "xgboost": {"num_boost_round": 120, "early_stopping_rounds": 15},
        "tuning": {"trials": 8, "parallelism": 2, **tuning},
    })


def run_search(spec, matrices, jitter: bool = False) -> TuningRun:
    """A tuning run on plain threads (no Prefect); `jitter` delays trial starts at random."""
    run = TuningRun(spec, matrices, "binary", None)
    rng = random.Random()

    def start(trial, params, history):
        if jitter:
            time.sleep(rng.uniform(0, 0.05))
        return run_trial(run.context, trial, params, history)

    with ThreadPoolExecutor(max_workers=spec.tuning.parallelism) as pool:
        run.outcome = run.search(lambda trial, params, history: pool.submit(start, trial, params, history))
    return run


def trials_of(run: TuningRun) -> list[tuple[Any, ...]]:
    return [(t.number, t.state.name, t.params, t.value, dict(t.intermediate_values))
            for t in run.study.get_trials(deepcopy=False)]


def test_search_space_defaults_and_overrides():
    spec = parse_spec({"name": "m", "data": {"uris": ["d.csv"]}, "target": "y", "tuning": {"search_space": {
        "max_depth": {"low": 3, "high": 5},
        "learning_rate": 0.05,
        "gamma": {"low": 0.01, "high": 1, "log": True},
        "max_leaves": {"low": 8, "high": 64, "log": True},
    }}})
    distributions, fixed = search_space(spec.tuning.search_space)
    assert fixed == {"learning_rate": 0.05}
    assert "learning_rate" not in distributions
    assert distributions["max_depth"] == IntDistribution(3, 5)
    assert distributions["gamma"] == FloatDistribution(0.01, 1.0, log=True)
    assert distributions["max_leaves"] == IntDistribution(8, 64, log=True)
    assert distributions["subsample"] == FloatDistribution(0.5, 1.0)  # default kept


@pytest.mark.parametrize(
    ("tuning", "field"),
    [
        ({"search_space": {"max_depth": {"low": 9, "high": 3}}}, "tuning.search_space.max_depth"),
        ({"search_space": {"gamma": {"low": 0, "high": 1, "log": True}}}, "tuning.search_space.gamma"),
        ({"storage": "/tmp/study.db"}, "tuning.storage"),
        ({"pruner": "hyperband"}, "tuning.pruner"),
        ({"parallelism": 0}, "tuning.parallelism"),
    ],
)
def test_bad_tuning_spec_names_the_field(tuning, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({"name": "m", "data": {"uris": ["d.csv"]}, "target": "y", "tuning": tuning})


def test_integer_range_without_a_whole_number_is_rejected():
    spec = parse_spec({"name": "m", "data": {"uris": ["d.csv"]}, "target": "y",
                       "tuning": {"search_space": {"max_depth": {"low": 3.2, "high": 3.8}}}})
    with pytest.raises(SpecError, match="max_depth"):
        search_space(spec.tuning.search_space)


def test_redact_url_hides_only_the_password():
    assert redact_url("postgresql://ann:s3cret@db:5432/optuna") == "postgresql://ann:***@db:5432/optuna"
    assert redact_url("postgresql://ann@db/optuna") == "postgresql://ann@db/optuna"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_cores_are_split_between_concurrent_trials():
    assert trial_threads(XGBoostSpec(nthread=8), 3) == 2
    assert trial_threads(XGBoostSpec(nthread=2), 4) == 1


def test_default_study_name_follows_data_and_settings(tmp_path, matrices):
    spec = make_spec(tmp_path)
    name = default_study_name(spec, matrices, "binary", None)
    assert name.startswith("tuned-")
    assert name == default_study_name(spec, matrices, "binary", None)
    assert name != default_study_name(spec, matrices.model_copy(update={"fingerprint": "e" * 64}), "binary", None)
    assert name != default_study_name(make_spec(tmp_path, trials=9), matrices, "binary", None)
    # the budget and where trials are kept do not make another study: a re-run resumes it
    assert name == default_study_name(make_spec(tmp_path, timeout_seconds=5, storage="journal"), matrices,
                                      "binary", None)


def test_same_seed_and_parallelism_give_the_same_trials_however_threads_run(tmp_path, matrices):
    spec = make_spec(tmp_path)
    first = run_search(spec, matrices, jitter=True)
    second = run_search(spec, matrices, jitter=True)
    assert trials_of(first) == trials_of(second)
    assert first.study.best_trial.params == second.study.best_trial.params
    assert len(first.study.trials) == 8
    # the sampler varies parameters: no two trials repeat each other
    assert len({tuple(sorted(t.params.items())) for t in first.study.trials}) == 8


def test_another_seed_gives_other_trials(tmp_path, matrices):
    first = run_search(make_spec(tmp_path), matrices)
    other = run_search(parse_spec({**make_spec(tmp_path).model_dump(), "seed": 8}), matrices)
    assert [t.params for t in first.study.trials] != [t.params for t in other.study.trials]


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving"])
def test_hopeless_trials_are_pruned_and_listed_as_pruned(tmp_path, matrices, pruner):
    spec = make_spec(tmp_path, trials=14, pruner=pruner)
    run = run_search(spec, matrices)
    states = [t.state for t in run.study.trials]
    pruned = [t for t in run.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, states
    # a pruned trial stopped before its rounds ran out or early stopping ended it
    assert all(t.last_step is not None and t.last_step + 1 < spec.xgboost.num_boost_round for t in pruned)
    rows = leaderboard(run.study)
    assert {r["trial"] for r in rows if r["state"] == "PRUNED"} == {t.number for t in pruned}
    assert rows[0]["state"] == "COMPLETE" and rows[0]["value"] == run.study.best_value
    again = run_search(spec, matrices)
    assert trials_of(again) == trials_of(run)


def test_no_pruner_prunes_nothing(tmp_path, matrices):
    run = run_search(make_spec(tmp_path, trials=10, pruner="none"), matrices)
    assert {t.state.name for t in run.study.trials} == {"COMPLETE"}


def test_a_rejected_parameter_fails_its_trial_and_the_search_goes_on(tmp_path, matrices):
    spec = make_spec(tmp_path, trials=6, search_space={"subsample": {"low": 0.5, "high": 1.6}})
    run = run_search(spec, matrices)
    failed = [t for t in run.study.trials if t.state.name == "FAIL"]
    finished = [t for t in run.study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert failed and all(t.params["subsample"] > 1 for t in failed)
    assert all("subsample" in t.user_attrs["error"] for t in failed)
    assert len(finished) == 6  # failed trials do not count toward the budget
    summary = study_summary(run.study, "in-memory", 7, spec.tuning, "logloss", run.outcome)
    assert summary["counts"] == {"complete": sum(t.state.name == "COMPLETE" for t in finished),
                                 "pruned": sum(t.state.name == "PRUNED" for t in finished), "fail": len(failed)}
    assert summary["best_params"]["subsample"] <= 1


def test_all_trials_failing_fails_with_the_error(tmp_path, matrices):
    spec = make_spec(tmp_path, trials=3, search_space={"subsample": 2.5})
    run = run_search(spec, matrices)
    assert [t.state.name for t in run.study.trials] == ["FAIL"] * 3
    assert run.outcome["stopped_by"] == "failures"
    with pytest.raises(TuningError, match=r"no trial completed \(3 failed.*subsample"):
        study_summary(run.study, "in-memory", 7, spec.tuning, "logloss", run.outcome)


def test_timeout_ends_with_the_best_trial_so_far(tmp_path, matrices):
    spec = parse_spec({**make_spec(tmp_path, trials=50, timeout_seconds=1.0, pruner="none").model_dump(),
                       "xgboost": {"num_boost_round": 100_000, "early_stopping_rounds": 100_000,
                                   "max_bin": 256}})
    started = time.monotonic()
    run = run_search(spec, matrices)
    assert time.monotonic() - started < 20
    assert run.outcome["stopped_by"] == "timeout"
    complete = [t for t in run.study.trials if t.state.name == "COMPLETE"]
    assert 1 <= len(complete) < 50
    assert all(t.user_attrs.get("cut_by_timeout") for t in complete)
    summary = study_summary(run.study, "in-memory", 7, spec.tuning, "logloss", run.outcome)
    assert summary["stopped_by"] == "timeout" and summary["best_value"] == run.study.best_value


def test_journal_study_resumes_without_redoing_finished_trials(tmp_path, matrices):
    spec = make_spec(tmp_path, trials=4, storage="journal", study_name="resume-me")
    first = run_search(spec, matrices)
    journal = tmp_path / "art" / "tuning" / "resume-me.journal"
    assert journal.exists() and first.storage == f"journal:{journal}"
    assert first.outcome["trials_this_run"] == [0, 1, 2, 3]

    rerun = run_search(spec, matrices)  # the same study, now finished
    assert rerun.outcome["trials_this_run"] == []
    assert len(rerun.study.trials) == 4

    more = run_search(make_spec(tmp_path, trials=6, storage="journal", study_name="resume-me"), matrices)
    assert more.outcome["trials_this_run"] == [4, 5]
    assert [t.number for t in more.study.trials] == list(range(6))


def test_journal_needs_a_local_artifact_store(tmp_path, matrices):
    spec = parse_spec({**make_spec(tmp_path, storage="journal").model_dump(), "artifacts": "s3://bucket/art"})
    with pytest.raises(SpecError, match="journal.*local artifact store"):
        TuningRun(spec, matrices, "binary", None)


def test_unreachable_database_is_a_clear_error(tmp_path, matrices, monkeypatch):
    monkeypatch.setenv("TP_UNREACHABLE_STORE", "postgresql://ann:s3cret@127.0.0.1:1/nothing")
    spec = make_spec(tmp_path, storage="env:TP_UNREACHABLE_STORE")
    with pytest.raises(TuningError, match=r"tuning\.storage env:TP_UNREACHABLE_STORE \(postgresql://ann:\*\*\*@127\.0\.0\.1:1/nothing\)") as info:
        TuningRun(spec, matrices, "binary", None)
    assert "s3cret" not in str(info.value)


def test_history_picture_is_svg_with_one_mark_per_scored_trial(tmp_path, matrices):
    run = run_search(make_spec(tmp_path, trials=8), matrices)
    rows = leaderboard(run.study)
    svg = history_svg(rows, "logloss", "study <x>")
    root = ET.fromstring(svg)
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == sum(r["value"] is not None for r in rows) == 8
    assert "study &lt;x&gt;" in svg


def test_a_crashed_trial_is_recorded_failed_not_left_running(tmp_path, matrices):
    spec = make_spec(tmp_path, trials=3, parallelism=1)
    run = TuningRun(spec, matrices, "binary", None)

    class Crashed:
        def result(self):
            raise MemoryError("out of memory in trial")

    with ThreadPoolExecutor(max_workers=1) as pool:
        outcome = run.search(lambda trial, params, history: Crashed() if trial.number == 1 else
                             pool.submit(run_trial, run.context, trial, params, history))
    states = {t.number: t.state.name for t in run.study.trials}
    assert states[1] == "FAIL" and "MemoryError: out of memory" in run.study.trials[1].user_attrs["error"]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    assert outcome["stopped_by"] == "trials"


def test_trial_rows_trains_trials_on_a_seeded_sample_and_records_it(tmp_path, matrices):
    spec = make_spec(tmp_path, trials=4, trial_rows=300)
    run = run_search(spec, matrices)
    pool = run.context.pool
    all_train = storage.read_parquet(matrices.uris["train"]).height
    assert (pool.trial_rows, pool.train_rows) == (300, all_train) and all_train > 300
    with pool.pair() as (dtrain, dvalid):
        assert dtrain.num_row() == 300
        assert dvalid.num_row() == storage.read_parquet(matrices.uris["valid"]).height  # validation is whole
    # the same sample in every run with that seed: the same trials, value for value
    assert trials_of(run_search(spec, matrices)) == trials_of(run)
    assert trials_of(run_search(make_spec(tmp_path, trials=4), matrices)) != trials_of(run)
    summary = run.finish(run.outcome).summary
    assert summary["trial_rows"] == {"used": 300, "of": all_train}


def test_trial_rows_above_the_training_rows_uses_every_row(tmp_path, matrices):
    run = run_search(make_spec(tmp_path, trials=2, trial_rows=100_000), matrices)
    assert run.context.pool.trial_rows == run.context.pool.train_rows


def test_sampler_models_parameters_jointly_and_reproducibly_after_startup():
    from tasks.tune.sampler import TrialSeededSampler

    space = {"learning_rate": FloatDistribution(0.01, 0.3, log=True), "max_depth": IntDistribution(2, 10)}

    def study_with(finished: int) -> optuna.Study:
        study = optuna.create_study(sampler=TrialSeededSampler(seed=1, n_startup_trials=5))
        for i in range(finished):
            study.add_trial(optuna.trial.create_trial(
                params={"learning_rate": 0.01 + 0.02 * i, "max_depth": 2 + i % 8}, distributions=space,
                value=float((i - 6) ** 2)))
        return study

    early, late = study_with(3), study_with(12)
    sampler = TrialSeededSampler(seed=1, n_startup_trials=5)
    assert sampler.sample_relative(early, early.ask()._cached_frozen_trial,
                                   sampler.infer_relative_search_space(early, early.trials[0])) == {}
    trial = late.ask()._cached_frozen_trial
    joint = sampler.infer_relative_search_space(late, trial)
    assert set(joint) == set(space)
    drawn = sampler.sample_relative(late, trial, joint)
    assert set(drawn) == set(space)
    assert sampler.sample_relative(late, trial, joint) == drawn                       # same seed, same draw
    assert TrialSeededSampler(seed=2, n_startup_trials=5).sample_relative(late, trial, joint) != drawn


def test_storage_env_reference_is_read_from_the_environment_and_shown_without_password(monkeypatch):
    from tasks.tune.study import resolve_storage_url
    from trainpipe.errors import TuningError

    monkeypatch.setenv("TP_UNIT_STORE", "postgresql://u:hunter2@db.example/x")
    url, shown = resolve_storage_url("env:TP_UNIT_STORE")
    assert url == "postgresql://u:hunter2@db.example/x"
    assert "hunter2" not in shown and shown.startswith("env:TP_UNIT_STORE")
    monkeypatch.delenv("TP_UNIT_STORE")
    with pytest.raises(TuningError, match="TP_UNIT_STORE is not set"):
        resolve_storage_url("env:TP_UNIT_STORE")


@pytest.mark.parametrize("value, accepted", [
    ("env:TRAINPIPE_OPTUNA_STORAGE", True), ("postgresql://user@host/db", True), ("journal", True),
    ("postgresql://user:secret@host/db", False), ("env:not a name", False),
])
def test_tuning_storage_refuses_inline_passwords(value, accepted):
    from pydantic import ValidationError

    from trainpipe.spec import TuningSpec

    if accepted:
        assert TuningSpec(storage=value).storage == value
    else:
        with pytest.raises(ValidationError, match="env:"):
            TuningSpec(storage=value)


def test_trials_of_a_killed_process_are_failed_and_their_replacements_draw_what_they_drew():
    """A resumed study: RUNNING trials whose process (on this host) is gone are failed and marked abandoned,
    and the trials asked in their place get the very parameters the killed ones had, so the study continues
    as if nothing had happened; a live owner's RUNNING trial is left alone."""
    import os
    import subprocess

    from optuna.trial import TrialState

    from tasks.tune.sampler import ABANDONED_ATTR, TrialSeededSampler
    from tasks.tune.search import ask_batch, tell_result, trials_to_ask
    from tasks.tune.study import OWNER_ATTR, _process_start, this_process

    space = {"learning_rate": FloatDistribution(0.01, 0.3, log=True), "max_depth": IntDistribution(2, 10)}

    def tell_batch(study, batch):
        for trial, params in batch:
            tell_result(study, trial, {"state": "COMPLETE", "value": params["learning_rate"] * params["max_depth"],
                                       "best_iteration": 1, "seconds": 0.0})

    def new_study():
        return optuna.create_study(sampler=TrialSeededSampler(seed=3, n_startup_trials=2))

    plain = new_study()
    for _ in range(3):
        tell_batch(plain, ask_batch(plain, 2, space, {}))
    expected = [t.params for t in plain.trials]

    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid no longer runs
    resumed = new_study()
    tell_batch(resumed, ask_batch(resumed, 2, space, {}))
    killed = ask_batch(resumed, 2, space, {})  # the batch a killed process was running
    for trial, _ in killed:
        trial.set_user_attr(OWNER_ATTR, {**this_process(), "pid": dead.pid})

    assert trials_to_ask(resumed, 6, mine=set(), parallelism=2) == 2
    states = {t.number: t.state for t in resumed.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.FAIL}
    assert all(resumed.trials[n].user_attrs[ABANDONED_ATTR] for n in (2, 3))
    assert "died while running it" in resumed.trials[2].user_attrs["error"]
    replacement = ask_batch(resumed, 2, space, {})
    assert [t.number for t, _ in replacement] == [4, 5]
    assert [params for _, params in replacement] == expected[2:4] != expected[4:6]
    tell_batch(resumed, replacement)
    assert [params for _, params in ask_batch(resumed, 2, space, {})] == expected[4:6]

    shared = new_study()  # a RUNNING trial of a live process (another run sharing the study) is left alone
    alive = ask_batch(shared, 1, space, {})[0][0]
    alive.set_user_attr(OWNER_ATTR, {**this_process(), "pid": os.getppid(), "start": _process_start(os.getppid())})
    assert trials_to_ask(shared, 6, mine=set(), parallelism=2) == 2
    assert shared.trials[0].state == TrialState.RUNNING
    alive.set_user_attr(OWNER_ATTR, {**this_process(), "pid": os.getppid(), "start": "1"})  # a reused pid
    assert trials_to_ask(shared, 6, mine=set(), parallelism=2) == 2
    assert shared.trials[0].state == TrialState.FAIL


def test_trial_data_is_read_partition_by_partition_and_is_the_whole_part_sample(tmp_path, matrices):
    """The trials' sample gathered one partition at a time (bounded memory for data out of core) holds exactly
    the rows, in order, that sampling the whole part read at once gives."""
    import numpy as np

    from tasks.tune.data import MatrixPool
    from tasks.tune.sampler import derived_seed
    from trainpipe.matrices import write_matrix
    from trainpipe.outofcore import sample_positions
    from trainpipe.transform import LABEL

    whole = {part: storage.read_parquet(matrices.uris[part]) for part in ("train", "valid")}
    uris, partitions = {}, {}
    for part, frame in whole.items():  # the same rows as partitions of 97 (several, the last one short)
        uris[part] = str(tmp_path / "parts" / part)
        partitions[part], _ = write_matrix(frame, uris[part], 97)
    assert len(partitions["train"]) > 3
    split = matrices.model_copy(update={"uris": {**matrices.uris, **uris}, "partitions": partitions})
    pool = MatrixPool(split, trial_rows=300, seed=5)
    keep = sample_positions(whole["train"].height, 300, derived_seed(5, "trial_rows"))
    names = [c for c in whole["train"].columns if c != LABEL]
    expected = whole["train"][keep]
    features, labels, got_names = pool._arrays["train"]
    assert got_names == names and features.dtype == np.float32
    assert np.array_equal(features, expected.select(names).to_numpy().astype(np.float32), equal_nan=True)
    assert np.array_equal(labels, expected.get_column(LABEL).to_numpy())
    assert len(pool._arrays["valid"][1]) == whole["valid"].height
    assert (pool.trial_rows, pool.train_rows) == (300, whole["train"].height)
    unsplit = MatrixPool(matrices, trial_rows=300, seed=5)  # one object per part: the same sample
    assert np.array_equal(unsplit._arrays["train"][0], features, equal_nan=True)


def tuned_with(summary: dict) -> Tuned:
    return Tuned(best_params={}, summary=summary, attachments={}, fingerprint="t" * 64, stage_key="k")


def test_the_train_stage_takes_the_best_trials_rounds_only_when_that_trial_saw_every_training_row(tmp_path, matrices):
    whole = run_search(make_spec(tmp_path, trials=3), matrices)
    summary = whole.finish(whole.outcome).summary
    best = whole.study.best_trial
    assert summary["best_iteration"] == best.user_attrs["best_iteration"] and not summary["best_cut_by_timeout"]
    assert rounds_from_tuning(tuned_with(summary)) == best.user_attrs["best_iteration"] + 1
    # trials on a sample: their rounds were chosen for fewer rows, so the train stage early-stops on its own
    sampled = run_search(make_spec(tmp_path, trials=3, trial_rows=300), matrices)
    assert rounds_from_tuning(tuned_with(sampled.finish(sampled.outcome).summary)) is None
    # a best trial the time budget cut short, or a summary from before the flag was recorded
    assert rounds_from_tuning(tuned_with({**summary, "best_cut_by_timeout": True})) is None
    assert rounds_from_tuning(tuned_with({k: v for k, v in summary.items() if k != "best_cut_by_timeout"})) is None
    assert rounds_from_tuning(None) is None
