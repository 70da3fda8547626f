"""Promotion: does a new version replace the champion, and moving it there.

The champion is re-scored on the challenger's holdout rows through its own stored
transform (as `trainpipe predict` would score them), so both models are judged on the
same rows. A paired bootstrap over those rows (on a large holdout, the normal interval of the
paired per-row influence values) gives a confidence interval of the metric difference; the challenger is promoted only if the observed improvement reaches the
policy's margin and the interval's lower end is above zero (a regression is ruled out).
The first version of a name is held to the same rule against the trivial baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import polars as pl

from trainpipe import audit, storage
from trainpipe.errors import DataError, RegistryError, SpecError
from trainpipe.metrics import METRICS, Scorer, compute_metrics
from trainpipe.scoring import champion_predictions, load_version, read_holdout
from trainpipe.spec import PromotionSpec, TaskType

if TYPE_CHECKING:
    from trainpipe.results import Evaluation, RunContext


def gate_metric(spec: PromotionSpec, task_type: TaskType) -> tuple[str, bool]:
    """The metric the gate compares and whether larger is better."""
    metric = spec.metric or next(iter(METRICS[task_type]))
    if metric not in METRICS[task_type]:
        raise SpecError(f"promotion.metric {metric!r} is not a {task_type} metric; "
                        f"choose one of {', '.join(METRICS[task_type])}")
    return metric, METRICS[task_type][metric]



# Resamples drawn at once: about this many row counts in memory per batch.
BOOTSTRAP_BATCH_CELLS = 2_000_000
# Up to this many resampled rows a resample's AUC is computed exactly; above, through its linear expansion.
EXACT_AUC_ROWS = 10_000


def paired_bootstrap(
    task_type: TaskType, metric: str, larger_is_better: bool, labels: np.ndarray, challenger: np.ndarray,
    reference: np.ndarray, samples: int, confidence: float, seed: int, max_rows: Optional[int] = None,
) -> dict[str, Any]:
    """Improvement of the challenger over the reference (positive = better) and its confidence interval,
    both models judged on the same rows.

    Up to `max_rows` holdout rows: a paired percentile bootstrap (both models scored on the same resampled rows
    each time; over `EXACT_AUC_ROWS` rows, AUC resamples use the AUC's linear (DeLong) expansion, see `Scorer`).
    Over `max_rows` rows: the normal interval of the paired difference over every row, from per-row influence
    values (`Scorer.influence`: DeLong's placements for AUC, the delta method for RMSE and R²) — what the
    bootstrap converges to at that size, in one pass instead of `samples` passes over the rows. The observed
    improvement is always that on every holdout row.
    """
    sign = 1.0 if larger_is_better else -1.0
    n = len(labels)
    ours_all, theirs_all = Scorer(task_type, metric, labels, challenger), Scorer(task_type, metric, labels, reference)
    full_ours, full_theirs = ours_all(), theirs_all()
    evidence: dict[str, Any] = {
        "metric": metric,
        "larger_is_better": larger_is_better,
        "challenger": full_ours,
        "reference": full_theirs,
        "improvement": float(sign * (full_ours - full_theirs)),
        "confidence": confidence,
        "rows": n,
    }
    if max_rows is not None and n > max_rows:
        low, high = normal_interval(sign * (ours_all.influence() - theirs_all.influence()),
                                    evidence["improvement"], confidence)
        return {**evidence, "ci_low": low, "ci_high": high, "interval": "normal", "samples": 0,
                "rows_resampled": 0, "auc_resamples": None}
    rng = np.random.default_rng(seed)
    linear = metric == "auc" and n > EXACT_AUC_ROWS
    ours = Scorer(task_type, metric, labels, challenger, linear=linear)
    theirs = Scorer(task_type, metric, labels, reference, linear=linear)
    batch = max(1, min(samples, BOOTSTRAP_BATCH_CELLS // max(n, 1)))
    draws = []
    for done in range(0, samples, batch):
        size = min(batch, samples - done)
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        draws.append(sign * (ours(counts) - theirs(counts)))
    every = np.concatenate(draws) if draws else np.empty(0)
    every = every[np.isfinite(every)]  # e.g. AUC of a resample holding one class only
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(every, [alpha, 1 - alpha]) if len(every) else (float("nan"), float("nan")))
    return {**evidence, "ci_low": float(low), "ci_high": float(high), "interval": "bootstrap",
            "samples": int(len(every)), "rows_resampled": n,
            "auc_resamples": ("linearised" if linear else "exact") if metric == "auc" else None}


def normal_interval(influence: np.ndarray, estimate: float, confidence: float) -> tuple[float, float]:
    """estimate ± z · sd(influence) / sqrt(n): the paired difference's normal confidence interval."""
    from statistics import NormalDist

    values = influence[np.isfinite(influence)]
    if len(values) < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * float(values.std(ddof=1)) / np.sqrt(len(values))
    return float(estimate - half), float(estimate + half)


def judge(policy: str, margin: float, evidence: Optional[dict[str, Any]], against: str) -> tuple[bool, str]:
    """The decision and its reason, in words a reviewer can check against the evidence."""
    if policy == "always":
        return True, "policy 'always': every new version becomes champion"
    if policy == "never":
        return False, "policy 'never': promotion only by hand (trainpipe models promote)"
    assert evidence is not None
    e = evidence
    ci = f"{e['confidence']:.0%} CI of the improvement [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
    delta = f"{e['metric']} {e['challenger']:.4f} vs {e['reference']:.4f} for the {against}"
    if not np.isfinite(e["improvement"]):
        return False, f"not promoted: {e['metric']} cannot be computed on this holdout ({delta})"
    if e["improvement"] < margin or e["improvement"] <= 0:
        return False, f"not promoted: not better than the {against} by the margin {margin:g} ({delta}; {ci})"
    if not e["ci_low"] > 0:
        return False, f"not promoted: a regression is not ruled out ({delta}; {ci})"
    return True, f"promoted: better than the {against} ({delta}; {ci})"



def gate(
    spec: PromotionSpec, task_type: TaskType, classes: Optional[list[Any]], labels: np.ndarray,
    challenger: np.ndarray, baseline: np.ndarray, holdout: Optional[pl.DataFrame | Iterable[pl.DataFrame]],
    champion: Optional[dict[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """The verdict on a challenger: against the champion when there is one, else against the baseline."""
    metric, larger = gate_metric(spec, task_type)
    against = f"champion v{champion['version']}" if champion else "trivial baseline"
    verdict: dict[str, Any] = {"policy": spec.policy, "metric": metric, "margin": spec.margin,
                               "against": "champion" if champion else "baseline",
                               "champion_version": champion["version"] if champion else None}
    try:
        reference = champion_predictions(champion, holdout, task_type, classes) if champion else baseline
    except DataError as error:
        verdict.update(evidence=None, promote=spec.policy == "always",
                       reason=("promoted (policy 'always'); " if spec.policy == "always" else "not promoted: ")
                       + f"the {against} cannot score this holdout ({error})")
        return verdict
    evidence = paired_bootstrap(task_type, metric, larger, labels, challenger, reference,
                                spec.bootstrap_samples, spec.confidence, seed, spec.bootstrap_rows)
    promote, reason = judge(spec.policy, spec.margin, evidence, against)
    verdict.update(evidence=evidence, promote=promote, reason=reason,
                   champion_metrics=compute_metrics(task_type, labels, reference) if champion else None)
    return verdict



def load_champion(artifacts: str, name: str, version: Optional[int]) -> Optional[dict[str, Any]]:
    return load_version(artifacts, f"{name}:{version}") if version is not None else None



class HoldoutInputs:
    """The holdout as the gate needs it: labels and both scores (from evaluate), raw rows when first asked."""

    def __init__(self, holdout_uri: str, rows_uri: str, slice_rows: Optional[int] = None):
        self.labels, self.challenger, self.baseline = read_holdout(holdout_uri)
        self.rows_uri, self.slice_rows = rows_uri, slice_rows
        self._rows: Optional[pl.DataFrame] = None

    @classmethod
    def of(cls, run: RunContext, evaluation: Evaluation) -> HoldoutInputs:
        """A run's holdout: its raw test rows read in `compute.partition_rows` slices when its data went out of
        core."""
        return cls(evaluation.holdout_uri, run.parts.uris["test"],
                   run.spec.compute.partition_rows if run.parts.out_of_core else None)

    @property
    def rows(self) -> pl.DataFrame | Iterator[pl.DataFrame]:
        """The raw test rows, for a champion to score through its own transform: read whole once, only when
        asked; with `slice_rows` (a run out of core) `slice_rows` at a time, read again on each use."""
        if self.slice_rows is not None:
            from trainpipe.outofcore import iter_slices

            return (frame for _, frame in iter_slices(self.rows_uri, self.slice_rows))
        if self._rows is None:
            self._rows = storage.read_parquet(self.rows_uri)
        return self._rows



def run_gate(
    artifacts: str, name: str, spec: PromotionSpec, seed: int, inputs: HoldoutInputs, task_type: TaskType,
    classes: Optional[list[Any]], champion_version: Optional[int],
) -> dict[str, Any]:
    try:
        champion = load_champion(artifacts, name, champion_version)
    except RegistryError as error:  # a champion whose files fail their hashes is not a fair reference
        raise RegistryError(f"champion v{champion_version} of {name!r} cannot be loaded: {error}") from None
    return gate(spec, task_type, classes, inputs.labels, inputs.challenger, inputs.baseline,
                inputs.rows if champion else None, champion, seed)


def promote_version(
    artifacts: str, name: str, version: int, verdict: dict[str, Any], spec: PromotionSpec, seed: int,
    regate: Any, fields: dict[str, Any],
) -> dict[str, Any]:
    """Record the verdict, then move `champion` to `version` if it was promoted, as a compare-and-swap:
    when the champion changed since the verdict (another run promoted meanwhile), the gate runs again
    against the new champion before anything moves. Returns the final verdict with `moved`."""
    latest = {"verdict": verdict}

    def decide(current: Optional[int], records: list[dict[str, Any]]) -> tuple[Optional[int], dict[str, Any]]:
        if current == version:
            latest["verdict"] = {**latest["verdict"], "promote": False,
                                 "reason": f"v{version} is already champion"}
            return None, latest["verdict"]
        if current != latest["verdict"]["champion_version"] and spec.policy == "gate":
            latest["verdict"] = regate(current)
        return (version if latest["verdict"]["promote"] else None), latest["verdict"]

    # Once per version: an identical run that published or found the same version at the same moment
    # leaves the judging (and the champion move) to whichever run recorded the verdict first.
    recorded, written = audit.append_once(artifacts, name, "gate_verdict", {**fields, "version": version,
                                                                              "verdict": verdict},
                                          same=lambda r: r.get("version") == version and not r.get("regated"))
    if not written:
        earlier = recorded.get("verdict") or {}
        return {**verdict, **earlier, "moved": False, "audit_seq": None,
                "reason": f"v{version} was already judged (audit record {recorded['seq']}): {earlier.get('reason')}"}
    move, final = audit.move_alias_if(artifacts, name, audit.CHAMPION, decide,
                                      {**fields, "kind": "gate", "reason": verdict["reason"]})
    if final is not verdict and final.get("champion_version") != verdict["champion_version"]:
        audit.append(artifacts, name, "gate_verdict", {**fields, "version": version, "verdict": final,
                                                       "regated": True})
    return {**final, "moved": move is not None, "audit_seq": move["seq"] if move else None}
