"""The batched search loop: ask a batch, run it at once, tell every result, until the budget is spent."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from tasks.tune.sampler import FrozenHistory
from tasks.tune.study import OWNER_ATTR, STALE_RUNNING_SECONDS, fail_abandoned_trials, this_process
from tasks.tune.trial import SearchContext
from trainpipe.spec import TuningSpec


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}


def trials_to_ask(study: optuna.Study, target: int, mine: set[int], parallelism: int) -> int:
    """How many trials to ask now: complete and pruned ones count toward the target, as do running ones of
    other processes sharing the study (unless abandoned long ago); failed ones do not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op where the storage has no heartbeat
    fail_abandoned_trials(study, mine)  # trials of a killed process of this host (a resumed run)
    now = dt.datetime.now()
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done += 1
        elif t.state == TrialState.RUNNING and t.number not in mine and t.datetime_start is not None:
            if (now - t.datetime_start).total_seconds() < STALE_RUNNING_SECONDS:
                done += 1
    return max(0, min(parallelism, target - done))


def ask_batch(study: optuna.Study, size: int, distributions: dict[str, BaseDistribution],
              fixed: dict[str, Any]) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    """Ask `size` trials and sample their parameters here, in order, before any of them runs."""
    batch = []
    owner = this_process()
    for _ in range(size):  # (trials record heartbeats themselves, in run_trial, as optimize() would)
        trial = ask_owned(study, distributions, owner)
        batch.append((trial, {**trial.params, **fixed}))
    return batch


def ask_owned(study: optuna.Study, distributions: dict[str, BaseDistribution], owner: dict[str, Any]) -> optuna.Trial:
    """`study.ask(distributions)` whose trial carries its owner from the moment it exists, so a process killed
    while sampling leaves no RUNNING trial without one (what Study.ask does, with the owner in the template)."""
    study._thread_local.cached_all_trials = None  # as ask() does: the sampler sees the storage as it is now
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={OWNER_ATTR: owner})
    trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id, template_trial=template))
    for name, distribution in distributions.items():
        trial._suggest(name, distribution)
    return trial


def tell_result(study: optuna.Study, trial: optuna.Trial, record: dict[str, Any]) -> None:
    trial.set_user_attr("seconds", record["seconds"])
    if record["state"] == "COMPLETE":
        trial.set_user_attr("best_iteration", record["best_iteration"])
        if record.get("timed_out"):
            trial.set_user_attr("cut_by_timeout", True)
        study.tell(trial, record["value"])
    elif record["state"] == "PRUNED":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("error", record["error"])
        study.tell(trial, state=TrialState.FAIL)


def search(study: optuna.Study, context: SearchContext, tuning: TuningSpec,
           distributions: dict[str, BaseDistribution], fixed: dict[str, Any],
           submit: Callable[..., Any]) -> dict[str, Any]:
    """Ask/run/tell in batches until the study holds `tuning.trials` finished trials, time runs out,
    or as many trials as asked for have failed in this run. `submit(trial, params, history)` starts a trial
    and returns something with `.result()`."""
    mine: set[int] = set()
    failed = 0
    stopped_by = "trials"
    while True:
        if context.deadline is not None and time.monotonic() >= context.deadline:
            stopped_by = "timeout"
            break
        if failed >= tuning.trials:
            stopped_by = "failures"
            break
        size = min(trials_to_ask(study, tuning.trials, mine, tuning.parallelism), tuning.trials - failed)
        if size == 0:
            break
        history = FrozenHistory(study)
        batch = ask_batch(study, size, distributions, fixed)
        mine.update(trial.number for trial, _ in batch)
        futures = [(trial, submit(trial, params, history)) for trial, params in batch]
        for trial, future in futures:  # told in trial order, whatever order they finished in
            try:
                record = future.result()
            except Exception as error:  # noqa: BLE001 - a trial that crashed is a failed trial, not a lost one
                record = {"state": "FAIL", "error": f"{type(error).__name__}: {error}"[:500], "seconds": 0.0}
            tell_result(study, trial, record)
            failed += record["state"] == "FAIL"
    return {"stopped_by": stopped_by, "trials_this_run": sorted(mine)}
