"""Sampling and pruning: per-trial seeded multivariate TPE, pruners with a warm-up, and the frozen
view of finished trials each batch prunes against."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any, Optional

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

SAMPLER = "TPESampler (multivariate; per-trial seed from spec seed and trial number)"

# User attribute of a trial whose process died while running it (SIGKILL, OOM, a lost machine), set when a
# later run finds it: such a trial is failed and gives up its place, and its number, to the next trial asked.
ABANDONED_ATTR = "abandoned"


# Pruning waits for this many finished trials, and for a fifth of the rounds (at least 10): early
# rounds mostly measure the learning rate, so pruning at round 10 drops slow but good learners.
PRUNE_STARTUP_TRIALS = 4


PRUNE_PERCENTILE = 25.0  # pruner "percentile": a trial must stay within the best quarter to go on


PRUNE_WARMUP_FRACTION, PRUNE_WARMUP_MIN_ROUNDS = 0.2, 10


def derived_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, the same in every process."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


class TrialSeededSampler(BaseSampler):
    """Multivariate TPE whose randomness for trial n comes from (seed, n) alone.

    A single seeded sampler draws from one random stream in ask order; here no stream is
    shared, so neither the order of asks nor another process asking from the same study
    shifts a trial's draws (two processes with one seed do not repeat each other's trials).
    n is the trial's number less the abandoned trials before it (`ABANDONED_ATTR`): a run that
    resumes after its process was killed mid-batch draws for the replacement of a killed trial
    exactly what the killed trial drew, so the study goes on as if the kill had not happened.
    The parameters are modelled jointly (multivariate TPE): a good learning rate depends on
    the depth and on the row and column sampling, which independent TPE cannot see. Until
    `n_startup_trials` trials have finished, and for parameters outside the joint space
    (added by an override mid-study), each parameter is drawn on its own.
    """

    def __init__(self, seed: int, n_startup_trials: int = 10):
        self.seed = seed
        self.n_startup_trials = n_startup_trials

    def _tpe(self, study: optuna.Study, trial: FrozenTrial, *parts: Any, multivariate: bool) -> TPESampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TPESampler(seed=derived_seed(self.seed, trial_ordinal(study, trial), *parts),
                              multivariate=multivariate, n_startup_trials=self.n_startup_trials)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe(study, trial, "joint", multivariate=True).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe(study, trial, "joint", multivariate=True).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        sampler = self._tpe(study, trial, param_name, multivariate=False)
        return sampler.sample_independent(study, trial, param_name, param_distribution)


def trial_ordinal(study: optuna.Study, trial: FrozenTrial) -> int:
    """The trial's number, not counting the abandoned trials numbered before it."""
    if trial.number == 0:
        return 0
    return trial.number - sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                              if t.number < trial.number and ABANDONED_ATTR in t.user_attrs)


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
