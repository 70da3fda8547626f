"""One trial: a pruned XGBoost fit on the pool's matrices, as a Prefect task."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import optuna
import xgboost as xgb
from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize uses; ask/tell has none
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.tune.data import MatrixPool
from tasks.tune.sampler import FrozenHistory
from trainpipe.spec import XGBoostSpec


class ReportRounds(xgb.callback.TrainingCallback):
    """Reports each round's validation score; stops training when told to (pruned, or out of time)."""

    def __init__(self, metric: str, on_round: Callable[[int, float], Optional[str]]):
        self.metric = metric
        self.on_round = on_round
        self.stopped: Optional[str] = None

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        value = float(evals_log["valid"][self.metric][-1])
        self.stopped = self.on_round(epoch, value)
        return self.stopped is not None


def fit_trial(dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, params: dict[str, Any], num_boost_round: int,
              early_stopping_rounds: int, on_round: Callable[[int, float], Optional[str]]) -> dict[str, Any]:
    """One trial's fit with early stopping; `on_round(round, score)` may stop it ("pruned" / "timeout")."""
    report = ReportRounds(params["eval_metric"], on_round)
    history: dict[str, Any] = {}
    booster = xgb.train(params, dtrain, num_boost_round=num_boost_round, evals=[(dvalid, "valid")],
                        early_stopping_rounds=early_stopping_rounds, evals_result=history, verbose_eval=False,
                        callbacks=[report])
    curve = history["valid"][params["eval_metric"]]
    best = int(np.argmin(curve))
    return {"value": float(curve[best]), "best_iteration": best, "rounds": booster.num_boosted_rounds(),
            "stopped": report.stopped}


class SearchContext:
    """What every trial of one tuning run shares (in memory; never a task's cache input)."""

    def __init__(self, study: optuna.Study, pool: MatrixPool, base_params: dict[str, Any], xgboost: XGBoostSpec,
                 deadline: Optional[float]):
        self.study = study
        self.pool = pool
        self.base_params = base_params
        self.num_boost_round = xgboost.num_boost_round
        self.early_stopping_rounds = xgboost.early_stopping_rounds
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"SearchContext({self.study.study_name})"


def run_trial(context: SearchContext, trial: optuna.Trial, params: dict[str, Any],
              history: FrozenHistory) -> dict[str, Any]:
    """Run one trial; an XGBoost error is a failed trial, not a failed run. Nothing is told to Optuna here."""
    started = time.perf_counter()
    pruner = context.study.pruner

    def on_round(step: int, value: float) -> Optional[str]:
        trial.report(value, step)
        if context.deadline is not None and time.monotonic() >= context.deadline:
            return "timeout"
        return "pruned" if pruner.prune(history, trial._get_latest_trial()) else None

    record: dict[str, Any] = {"number": trial.number, "params": params}
    try:
        with get_heartbeat_thread(trial._trial_id, context.study._storage), context.pool.pair() as (dtrain, dvalid):
            fitted = fit_trial(dtrain, dvalid, {**context.base_params, **params}, context.num_boost_round,
                               context.early_stopping_rounds, on_round)
    except xgb.core.XGBoostError as error:
        message = str(error).strip().splitlines()[0][:500]
        record.update(state="FAIL", value=None, error=message)
    else:
        state = "PRUNED" if fitted["stopped"] == "pruned" else "COMPLETE"
        record.update(state=state, value=fitted["value"], best_iteration=fitted["best_iteration"],
                      rounds=fitted["rounds"], timed_out=fitted["stopped"] == "timeout")
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE, persist_result=False)
def trial_task(context: SearchContext, trial: optuna.Trial, number: int, params: dict[str, Any],
               history: FrozenHistory) -> dict[str, Any]:
    record = run_trial(context, trial, params, history)
    if record["state"] == "FAIL":
        get_run_logger().warning("trial %d failed: %s", number, record["error"])
    return record


def trial_threads(xgboost: XGBoostSpec, parallelism: int) -> int:
    """XGBoost threads per trial: the cores split between concurrent trials."""
    cores = xgboost.nthread or os.cpu_count() or 1
    return max(1, cores // parallelism)
