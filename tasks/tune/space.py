"""Search space: the default XGBoost ranges with the spec's overrides on top, as Optuna distributions."""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from trainpipe.errors import SpecError
from trainpipe.spec import SearchRange

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
