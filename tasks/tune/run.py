"""A tuning run opened on its study (what the tune subflow composes), and the spec the train stage
refits with.

Opening (the finished-run check, the study, the trials' matrices) and finishing (the leaderboard, the
picture, the stage marker) are the run's only object-store I/O; each is a task that retries transient store
failures (tasks/common.TRANSIENT_RETRIES), as every cached stage does. The trials themselves work in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import TRANSIENT_RETRIES, finish_stage, stage_dir, stored_stage_result
from tasks.tune.data import MatrixPool
from tasks.tune.results import best_params, leaderboard, param_importances, publish_results, study_summary
from tasks.tune.search import search
from tasks.tune.space import search_space
from tasks.tune.study import default_study_name, journal_path, open_study
from tasks.tune.trial import SearchContext, trial_threads
from trainpipe import storage
from trainpipe.boosting import booster_params
from trainpipe.results import Matrices, Tuned
from trainpipe.spec import TaskType, TrainSpec, XGBoostSpec


def tune_folder(artifacts: str, spec: TrainSpec, matrices: Matrices, task_type: TaskType,
                n_classes: Optional[int], study_name: str) -> str:
    """Content-addressed folder of one tuning run's results (the same key rules as every stage)."""
    return stage_dir(artifacts, "tune", {"matrices": matrices, "task": task_type, "n_classes": n_classes,
                                         "seed": spec.seed, "xgboost": spec.xgboost, "tuning": spec.tuning,
                                         "study_name": study_name})


class TuningRun:
    """A tuning run opened on its study: what the subflow's loop and its report need."""

    def __init__(self, spec: TrainSpec, matrices: Matrices, task_type: TaskType, n_classes: Optional[int]):
        self.started = time.perf_counter()
        artifacts = storage.normalize_root(spec.artifacts)
        self.spec, self.tuning, self.seed = spec, spec.tuning, spec.seed
        self.study_name = spec.tuning.study_name or default_study_name(spec, matrices, task_type, n_classes)
        if spec.tuning.storage == "journal":
            journal_path(artifacts, self.study_name)  # fail before touching the store
        self.folder = tune_folder(artifacts, spec, matrices, task_type, n_classes, self.study_name)
        self.done = stored_stage_result(self.folder, Tuned)
        if self.done is not None:
            return
        self.distributions, self.fixed = search_space(spec.tuning.search_space)
        base = trial_base_params(spec.xgboost, task_type, n_classes, spec.seed, spec.tuning.parallelism)
        self.metric = base["eval_metric"]
        self.study, self.storage = open_study(spec.tuning, artifacts, self.study_name, spec.seed,
                                               spec.xgboost.num_boost_round)
        deadline = time.monotonic() + spec.tuning.timeout_seconds if spec.tuning.timeout_seconds else None
        self.context = SearchContext(self.study, MatrixPool(matrices, spec.tuning.trial_rows, spec.seed), base,
                                     spec.xgboost, deadline)

    def __repr__(self) -> str:
        return f"TuningRun({self.study_name})"

    def search(self, submit: Callable[..., Any]) -> dict[str, Any]:
        return search(self.study, self.context, self.tuning, self.distributions, self.fixed, submit)

    def finish(self, outcome: dict[str, Any]) -> Tuned:
        """Summarise the study, publish the leaderboard and picture, and record the run as complete."""
        summary = study_summary(self.study, self.storage, self.seed, self.tuning, self.metric, outcome)
        summary["trial_rows"] = {"used": self.context.pool.trial_rows, "of": self.context.pool.train_rows}
        rows = leaderboard(self.study)
        importances = param_importances(self.study, self.seed)
        attachments = publish_results(self.folder, summary, rows, importances)
        best = best_params(self.study, self.fixed)
        meta = {"best_params": best, "summary": {**summary, "importances": importances}, "attachments": attachments}
        return finish_stage(self.folder, Tuned, meta, self.started,
                            content=[best, summary["study_name"], summary["best_trial"], summary["best_value"]])


# In memory, in the subflow's process: a run holds the study and the matrices (never persisted or hashed).
@task(name="open-tuning", cache_policy=NO_CACHE, persist_result=False, **TRANSIENT_RETRIES)
def open_tuning_task(spec: TrainSpec, matrices: Matrices, task_type: TaskType,
                     n_classes: Optional[int]) -> TuningRun:
    """The tuning run, opened again from the start when a store read failed (a new in-memory study, or the
    same stored one loaded)."""
    return TuningRun(spec, matrices, task_type, n_classes)


@task(name="finish-tuning", cache_policy=NO_CACHE, persist_result=False, **TRANSIENT_RETRIES)
def finish_tuning_task(run: TuningRun, outcome: dict[str, Any]) -> Tuned:
    """`TuningRun.finish`; a retry rewrites the same files, the marker last."""
    return run.finish(outcome)


def tuned_xgboost(xgboost: XGBoostSpec, tuned: Optional[Tuned]) -> XGBoostSpec:
    """The xgboost spec the train stage refits with: the best parameters over the spec's own."""
    if not tuned:
        return xgboost
    return xgboost.model_copy(update={"extra_params": {**xgboost.extra_params, **tuned.best_params}})


def trial_base_params(xgboost: XGBoostSpec, task_type: TaskType, n_classes: Optional[int], seed: int,
                      parallelism: int) -> dict[str, Any]:
    params = booster_params(xgboost, task_type, n_classes, seed)
    params.update(nthread=trial_threads(xgboost, parallelism), verbosity=0)
    return params
