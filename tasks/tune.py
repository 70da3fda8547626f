"""Tune: an Optuna search over XGBoost parameters, in reproducible batches, one Prefect task per trial.

The search asks a batch of `parallelism` trials, runs them at once, tells all results, and
repeats. Parameters are sampled in the asking thread and the sampler's randomness for trial
n comes from (seed, n, parameter), so thread scheduling never changes which trials run. Each
trial prunes against a frozen view of the trials finished before its batch began, never
against its batch siblings, so pruning decisions are reproducible too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import queue
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import optuna
import xgboost as xgb
from fsspec.implementations.local import LocalFileSystem
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize uses; ask/tell has none
from optuna.trial import FrozenTrial, TrialState
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.common import content_fingerprint, finish_stage, stage_dir, stored_stage_result
from trainpipe import storage
from trainpipe.boosting import booster_params
from trainpipe.errors import SpecError, TuningError
from trainpipe.results import Matrices, Tuned
from trainpipe.spec import SearchRange, TaskType, TrainSpec, TuningSpec, XGBoostSpec
from trainpipe.transform import LABEL

SAMPLER = "TPESampler (multivariate; per-trial seed from spec seed and trial number)"
# Database storages: a running trial records a heartbeat; one silent for the grace period is failed
# (its process died) and its place in the budget is freed. Journal files have no heartbeat: there a
# RUNNING trial of another process older than STALE_RUNNING_SECONDS is taken as abandoned.
HEARTBEAT_SECONDS, HEARTBEAT_GRACE_SECONDS = 10, 60
STALE_RUNNING_SECONDS = 3600
# Pruning waits for this many finished trials, and for a fifth of the rounds (at least 10): early
# rounds mostly measure the learning rate, so pruning at round 10 drops slow but good learners.
PRUNE_STARTUP_TRIALS = 4
PRUNE_PERCENTILE = 25.0  # pruner "percentile": a trial must stay within the best quarter to go on
PRUNE_WARMUP_FRACTION, PRUNE_WARMUP_MIN_ROUNDS = 0.2, 10
INTEGER_PARAMS = {"max_depth", "max_bin", "max_leaves", "max_cat_to_onehot", "num_parallel_tree", "max_delta_step"}

DEFAULT_SPACE: dict[str, SearchRange] = {
    "learning_rate": SearchRange(low=0.01, high=0.3, log=True),
    "max_depth": SearchRange(low=2, high=10),
    "min_child_weight": SearchRange(low=0.1, high=20.0, log=True),
    "subsample": SearchRange(low=0.5, high=1.0),
    "colsample_bytree": SearchRange(low=0.5, high=1.0),
    "reg_lambda": SearchRange(low=1e-3, high=10.0, log=True),
    "reg_alpha": SearchRange(low=1e-3, high=10.0, log=True),
}


# ---- search space -------------------------------------------------------------------------------------------


def search_space(overrides: dict[str, Any]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """Distributions to sample and fixed values: the default space with the spec's overrides on top."""
    merged: dict[str, Any] = {**DEFAULT_SPACE, **overrides}
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for name, entry in sorted(merged.items()):
        if not isinstance(entry, SearchRange):
            fixed[name] = entry
            continue
        integer = entry.integer if entry.integer is not None else name in INTEGER_PARAMS
        if integer:
            low, high = math.ceil(entry.low), math.floor(entry.high)
            if low > high:
                raise SpecError(f"tuning.search_space.{name}: no whole number between {entry.low} and {entry.high}")
            distributions[name] = IntDistribution(low, high, log=entry.log)
        else:
            distributions[name] = FloatDistribution(entry.low, entry.high, log=entry.log)
    return distributions, fixed


# ---- sampling and pruning -----------------------------------------------------------------------------------


def derived_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, the same in every process."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


class TrialSeededSampler(BaseSampler):
    """Multivariate TPE whose randomness for trial n comes from (seed, n) alone.

    A single seeded sampler draws from one random stream in ask order; here no stream is
    shared, so neither the order of asks nor another process asking from the same study
    shifts a trial's draws (two processes with one seed do not repeat each other's trials).
    The parameters are modelled jointly (multivariate TPE): a good learning rate depends on
    the depth and on the row and column sampling, which independent TPE cannot see. Until
    `n_startup_trials` trials have finished, and for parameters outside the joint space
    (added by an override mid-study), each parameter is drawn on its own.
    """

    def __init__(self, seed: int, n_startup_trials: int = 10):
        self.seed = seed
        self.n_startup_trials = n_startup_trials

    def _tpe(self, trial: FrozenTrial, *parts: Any, multivariate: bool) -> TPESampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TPESampler(seed=derived_seed(self.seed, trial.number, *parts), multivariate=multivariate,
                              n_startup_trials=self.n_startup_trials)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe(trial, "joint", multivariate=True).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe(trial, "joint", multivariate=True).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        sampler = self._tpe(trial, param_name, multivariate=False)
        return sampler.sample_independent(study, trial, param_name, param_distribution)


def warmup_rounds(num_boost_round: int) -> int:
    return max(PRUNE_WARMUP_MIN_ROUNDS, int(num_boost_round * PRUNE_WARMUP_FRACTION))


def make_pruner(kind: str, num_boost_round: int) -> optuna.pruners.BasePruner:
    warmup = warmup_rounds(num_boost_round)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=warmup)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(PRUNE_PERCENTILE, n_startup_trials=PRUNE_STARTUP_TRIALS,
                                               n_warmup_steps=warmup)
    if kind == "successive_halving":
        # An explicit min_resource: "auto" would be estimated once, from whatever had finished by then.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=3)
    return optuna.pruners.NopPruner()


class FrozenHistory:
    """What a pruner may see: the study's finished trials as they were when a batch was asked."""

    def __init__(self, study: optuna.Study):
        self._storage = study._storage  # SuccessiveHalvingPruner records rung values on the trial itself
        self.direction = study.direction
        self.directions = study.directions
        self.pruner = study.pruner
        self._trials = study.get_trials(deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def get_trials(self, deepcopy: bool = True, states: Optional[tuple[TrialState, ...]] = None) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    _get_trials = get_trials


# ---- storage and study --------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A storage URL without its password."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def journal_path(artifacts: str, study_name: str) -> str:
    """The study's journal file in the artifact store's local folder."""
    fs, path = storage.get_fs(artifacts)
    if not isinstance(fs, LocalFileSystem):
        raise SpecError(f"tuning.storage 'journal' needs a local artifact store, not {artifacts!r}; "
                        "give a database URL (e.g. postgresql://...) instead")
    return os.path.join(path, "tuning", f"{study_name}.journal")


def open_storage(tuning: TuningSpec, artifacts: str, study_name: str) -> tuple[Any, str]:
    """The Optuna storage and how the manifest names it (passwords redacted)."""
    if tuning.storage is None:
        return optuna.storages.InMemoryStorage(), "in-memory"
    if tuning.storage == "journal":
        path = journal_path(artifacts, study_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend), f"journal:{path}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            backend = optuna.storages.RDBStorage(tuning.storage, heartbeat_interval=HEARTBEAT_SECONDS,
                                                 grace_period=HEARTBEAT_GRACE_SECONDS)
        return backend, redact_url(tuning.storage)
    except Exception as error:  # noqa: BLE001 - driver and connection errors vary by database
        raise TuningError(f"tuning.storage {redact_url(tuning.storage)}: cannot open it: "
                          f"{type(error).__name__}: {redact_url(str(error))}") from None


def open_study(tuning: TuningSpec, artifacts: str, study_name: str, seed: int,
               num_boost_round: int) -> tuple[optuna.Study, str]:
    """Create the study, or load it when the storage already holds one of that name (resume)."""
    backend, described = open_storage(tuning, artifacts, study_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trainpipe reports trials itself (leaderboard, logs)
    study = optuna.create_study(storage=backend, study_name=study_name, direction="minimize",
                                sampler=TrialSeededSampler(seed), pruner=make_pruner(tuning.pruner, num_boost_round),
                                load_if_exists=True)
    return study, described


def default_study_name(spec: TrainSpec, matrices: Matrices, task_type: TaskType,
                       n_classes: Optional[int]) -> str:
    """The model name plus a key of everything that decides the trials: a re-run resumes the same study."""
    key = content_fingerprint(matrices.fingerprint, task_type, n_classes, spec.seed,
                              spec.xgboost.model_dump(mode="json"),
                              spec.tuning.model_dump(mode="json", exclude={"storage", "study_name",
                                                                           "timeout_seconds"}))
    return f"{spec.name}-{key[:16]}"


# ---- data -----------------------------------------------------------------------------------------------------


class MatrixPool:
    """Train/valid DMatrix pairs for concurrent trials: each trial takes a pair and gives it back.

    XGBoost keeps its histogram index in a DMatrix, so a pair reused by the next trial is not
    sketched again; a pair is never used by two trials at once.
    """

    def __init__(self, matrices: Matrices, trial_rows: Optional[int] = None, seed: int = 0):
        self._arrays = {part: _arrays(storage.read_parquet(matrices.uris[part])) for part in ("train", "valid")}
        self.train_rows = len(self._arrays["train"][1])
        if trial_rows is not None and self.train_rows > trial_rows:
            self._arrays["train"] = _sample(self._arrays["train"], trial_rows, derived_seed(seed, "trial_rows"))
        self.trial_rows = len(self._arrays["train"][1])
        self._types = matrices.feature_types
        self._free: queue.SimpleQueue[tuple[xgb.DMatrix, xgb.DMatrix]] = queue.SimpleQueue()

    def _build(self, part: str) -> xgb.DMatrix:
        features, labels, names = self._arrays[part]
        return xgb.DMatrix(features, label=labels, feature_names=names, feature_types=self._types,
                           enable_categorical=True, missing=np.nan)

    @contextmanager
    def pair(self) -> Iterator[tuple[xgb.DMatrix, xgb.DMatrix]]:
        try:
            taken = self._free.get_nowait()
        except queue.Empty:
            taken = (self._build("train"), self._build("valid"))
        try:
            yield taken
        finally:
            self._free.put(taken)


def _arrays(frame: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    features = frame.drop(LABEL)
    return features.to_numpy().astype(np.float32), frame.get_column(LABEL).to_numpy(), features.columns


def _sample(arrays: tuple[np.ndarray, np.ndarray, list[str]], rows: int,
            seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`rows` of the arrays' rows, drawn without replacement by `seed`, in their original order."""
    features, labels, names = arrays
    keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=rows, replace=False))
    return features[keep], labels[keep], names


# ---- one trial ------------------------------------------------------------------------------------------------


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


# ---- the batched search loop ----------------------------------------------------------------------------------


def trial_threads(xgboost: XGBoostSpec, parallelism: int) -> int:
    """XGBoost threads per trial: the cores split between concurrent trials."""
    cores = xgboost.nthread or os.cpu_count() or 1
    return max(1, cores // parallelism)


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
    for _ in range(size):
        with warnings.catch_warnings():  # trials record heartbeats themselves (run_trial), not via optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask(distributions)
        batch.append((trial, {**trial.params, **fixed}))
    return batch


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


# ---- results --------------------------------------------------------------------------------------------------


def leaderboard(study: optuna.Study) -> list[dict[str, Any]]:
    """Every finished trial, best first (complete by value, then pruned, then failed)."""
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in order:
            continue
        value = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[t.last_step] if t.last_step is not None else None)
        rows.append({"trial": t.number, "state": t.state.name, "value": value,
                     "params": {k: _plain(v) for k, v in sorted(t.params.items())},
                     "rounds": (t.last_step + 1) if t.last_step is not None else None,
                     "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error")})
    rows.sort(key=lambda r: (order[TrialState[r["state"]]], r["value"] if r["value"] is not None else math.inf,
                             r["trial"]))
    return rows


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def param_importances(study: optuna.Study, seed: int) -> dict[str, float]:
    """fANOVA importances over the complete trials; empty when there are too few to say."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):
        return {}
    return {k: round(float(v), 6) for k, v in found.items()}


def history_svg(rows: list[dict[str, Any]], metric: str, title: str) -> str:
    """The optimization history as a small SVG: each trial's value, pruned ones grey, the best so far as a line."""
    width, height, margin = 640, 360, 50
    points = sorted((r for r in rows if r["value"] is not None and math.isfinite(r["value"])),
                    key=lambda r: r["trial"])
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                f'<text x="20" y="40">{_xml(title)}: no finished trials</text></svg>\n')
    numbers = [r["trial"] for r in rows] or [0]
    x_lo, x_hi = min(numbers), max(max(numbers), min(numbers) + 1)
    values = [r["value"] for r in points]
    y_lo, y_hi = min(values), max(values)
    if y_hi == y_lo:
        y_hi = y_lo + 1.0

    def x(n: float) -> float:
        return margin + (n - x_lo) / (x_hi - x_lo) * (width - 2 * margin)

    def y(v: float) -> float:
        return height - margin - (v - y_lo) / (y_hi - y_lo) * (height - 2 * margin)

    marks, best_line, best = [], [], math.inf
    for r in points:
        colour = "#1f77b4" if r["state"] == "COMPLETE" else "#aaaaaa"
        marks.append(f'<circle cx="{x(r["trial"]):.1f}" cy="{y(r["value"]):.1f}" r="4" fill="{colour}">'
                     f'<title>trial {r["trial"]} {r["state"]}: {r["value"]:.6g}</title></circle>')
        if r["state"] == "COMPLETE" and r["value"] < best:
            best = r["value"]
        if math.isfinite(best):
            best_line.append(f"{x(r['trial']):.1f},{y(best):.1f}")
    axis = (f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>'
            f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>')
    labels = (f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">trial</text>'
              f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">'
              f'{_xml(metric)} (validation)</text>'
              f'<text x="{margin}" y="{height - margin + 16}">{x_lo}</text>'
              f'<text x="{width - margin}" y="{height - margin + 16}" text-anchor="end">{x_hi}</text>'
              f'<text x="{margin - 4}" y="{margin}" text-anchor="end" font-size="10">{y_hi:.4g}</text>'
              f'<text x="{margin - 4}" y="{height - margin}" text-anchor="end" font-size="10">{y_lo:.4g}</text>'
              f'<text x="{width / 2}" y="24" text-anchor="middle" font-weight="bold">{_xml(title)}</text>')
    line = f'<polyline points="{" ".join(best_line)}" fill="none" stroke="#d62728" stroke-width="2"/>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'font-size="12">{axis}{labels}{line}{"".join(marks)}</svg>\n')


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def study_summary(study: optuna.Study, described_storage: str, seed: int, tuning: TuningSpec,
                  metric: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about the study."""
    found = counts(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        detail = f"; first error: {errors[0]}" if errors and errors[0] else ""
        raise TuningError(
            f"tuning study {study.study_name!r}: no trial completed ({found['fail']} failed, {found['pruned']} pruned"
            f"{', stopped by the timeout' if outcome['stopped_by'] == 'timeout' else ''}){detail}; "
            "check tuning.search_space and xgboost.extra_params")
    best = study.best_trial
    return {
        "performed": True,
        "storage": described_storage,
        "study_name": study.study_name,
        "sampler": SAMPLER,
        "pruner": tuning.pruner,
        "seed": seed,
        "parallelism": tuning.parallelism,
        "trials_asked": tuning.trials,
        "timeout_seconds": tuning.timeout_seconds,
        "stopped_by": outcome["stopped_by"],
        "trials_this_run": outcome["trials_this_run"],
        "counts": {k: found[k] for k in ("complete", "pruned", "fail")},
        "metric": metric,
        "direction": "minimize",
        "best_trial": best.number,
        "best_value": float(best.value),
        "best_params": {k: _plain(v) for k, v in sorted(best.params.items())},
        "best_iteration": best.user_attrs.get("best_iteration"),
    }


def best_params(study: optuna.Study, fixed: dict[str, Any]) -> dict[str, Any]:
    """The best trial's parameters, fixed ones included: what the train stage refits with."""
    return {**{k: _plain(v) for k, v in study.best_trial.params.items()}, **fixed}


def publish_results(folder: str, summary: dict[str, Any], rows: list[dict[str, Any]],
                    importances: dict[str, float]) -> dict[str, str]:
    """Write the leaderboard JSON and the history picture; show them as Prefect artifacts. Returns file URIs."""
    attachments = {
        "tuning_leaderboard.json": storage.join(folder, "tuning_leaderboard.json"),
        "tuning_history.svg": storage.join(folder, "tuning_history.svg"),
    }
    storage.write_json(attachments["tuning_leaderboard.json"],
                       {"study": summary, "importances": importances, "trials": rows})
    storage.write_bytes(attachments["tuning_history.svg"],
                        history_svg(rows, summary["metric"], f"study {summary['study_name']}").encode())
    table = [{"trial": r["trial"], "state": r["state"], "value": r["value"], "seconds": r["seconds"],
              "params": ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items())} for r in rows]
    create_table_artifact(key="tuning-leaderboard", table=table,
                          description=f"Optuna study {summary['study_name']}: {summary['metric']} on validation")
    lines = "\n".join(f"| {k} | {v:.3f} |" for k, v in importances.items()) or "| (too few complete trials) | |"
    create_markdown_artifact(key="tuning-importances", markdown=(
        f"# Parameter importances (fANOVA)\n\nstudy `{summary['study_name']}`, best trial {summary['best_trial']}"
        f" ({summary['metric']} {summary['best_value']:.6g})\n\n| parameter | importance |\n|---|---|\n{lines}\n"))
    return attachments


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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

