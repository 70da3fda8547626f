"""Promotion gate: does a new version replace the champion?

The champion is re-scored on the challenger's holdout rows through its own stored
transform (as `trainpipe predict` would score them), so both models are judged on the
same rows. A paired bootstrap over those rows gives a confidence interval of the metric
difference; the challenger is promoted only if the observed improvement reaches the
policy's margin and the interval's lower end is above zero (a regression is ruled out).
The first version of a name is held to the same rule against the trivial baseline.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import polars as pl
import xgboost as xgb
from prefect import task

from tasks import audit
from tasks.common import TRANSIENT_RETRIES
from tasks.evaluate import EPS, METRICS, baseline_predictions, compute_metrics
from tasks.features import LABEL, apply_transform
from tasks.train import load_matrix
from trainpipe import storage
from trainpipe.errors import DataError, RegistryError, SpecError
from trainpipe.spec import PromotionSpec, TaskType


def gate_metric(spec: PromotionSpec, task_type: TaskType) -> tuple[str, bool]:
    """The metric the gate compares and whether larger is better."""
    metric = spec.metric or next(iter(METRICS[task_type]))
    if metric not in METRICS[task_type]:
        raise SpecError(f"promotion.metric {metric!r} is not a {task_type} metric; "
                        f"choose one of {', '.join(METRICS[task_type])}")
    return metric, METRICS[task_type][metric]


class Scorer:
    """One model's holdout metric under row weights: a bootstrap resample is a vector of row counts.

    The rows are sorted (for AUC) and per-row losses computed once, so each resample costs two
    weighted sums instead of a copy of the rows and a fresh ranking.
    """

    def __init__(self, task_type: TaskType, metric: str, labels: np.ndarray, pred: np.ndarray):
        self.metric = metric
        self.labels = labels.astype(np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        if metric == "auc":
            order = np.argsort(pred, kind="mergesort")
            _, groups = np.unique(pred[order], return_inverse=True)
            self.group = np.empty(len(pred), dtype=np.int64)
            self.group[order] = groups
            self.n_groups = int(groups.max()) + 1 if len(groups) else 0
        elif task_type == "binary":
            p = np.clip(pred, EPS, 1 - EPS)
            self.row = (-(self.labels * np.log(p) + (1 - self.labels) * np.log(1 - p)) if metric == "logloss"
                        else ((pred >= 0.5) == (self.labels == 1)).astype(np.float64))
        elif task_type == "multiclass":
            idx = labels.astype(int)
            chosen = np.clip(pred[np.arange(len(idx)), idx], EPS, 1.0)
            self.row = -np.log(chosen) if metric == "mlogloss" else (pred.argmax(axis=1) == idx).astype(np.float64)
        else:
            residual = self.labels - pred
            self.row = np.abs(residual) if metric == "mae" else residual**2

    def __call__(self, weights: np.ndarray) -> float:
        if self.metric == "auc":
            pos = np.bincount(self.group, weights=weights * self.labels, minlength=self.n_groups)
            neg = np.bincount(self.group, weights=weights * (1 - self.labels), minlength=self.n_groups)
            total_pos, total_neg = pos.sum(), neg.sum()
            if total_pos == 0 or total_neg == 0:
                return float("nan")
            below = np.cumsum(neg) - neg  # negatives scored strictly lower; ties count half
            return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))
        mean = float(np.sum(weights * self.row) / np.sum(weights))
        if self.metric == "rmse":
            return float(np.sqrt(mean))
        if self.metric == "r2":
            centre = np.sum(weights * self.labels) / np.sum(weights)
            total = float(np.sum(weights * (self.labels - centre) ** 2))
            return float(1 - np.sum(weights * self.row) / total) if total > 0 else float("nan")
        return mean


def paired_bootstrap(
    task_type: TaskType, metric: str, larger_is_better: bool, labels: np.ndarray, challenger: np.ndarray,
    reference: np.ndarray, samples: int, confidence: float, seed: int,
) -> dict[str, Any]:
    """Improvement of the challenger over the reference (positive = better) and its percentile interval,
    both models scored on the same resampled rows each time."""
    sign = 1.0 if larger_is_better else -1.0
    ours, theirs = Scorer(task_type, metric, labels, challenger), Scorer(task_type, metric, labels, reference)
    n = len(labels)
    rng = np.random.default_rng(seed)
    everything = np.ones(n)
    draws = np.empty(samples)
    for i in range(samples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        draws[i] = sign * (ours(counts) - theirs(counts))
    draws = draws[np.isfinite(draws)]  # e.g. AUC of a resample holding one class only
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (float("nan"), float("nan")))
    return {
        "metric": metric,
        "larger_is_better": larger_is_better,
        "challenger": ours(everything),
        "reference": theirs(everything),
        "improvement": float(sign * (ours(everything) - theirs(everything))),
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "samples": int(len(draws)),
        "rows": n,
    }


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


def reorder_classes(pred: np.ndarray, task_type: TaskType, theirs: list[Any], ours: list[Any]) -> np.ndarray:
    """Champion probabilities laid out in the challenger's class order."""
    if sorted(map(str, theirs)) != sorted(map(str, ours)):
        raise DataError(f"the champion's classes {theirs} differ from this version's {ours}")
    if task_type == "binary":
        return pred if str(theirs[1]) == str(ours[1]) else 1 - pred
    index = [list(map(str, theirs)).index(str(c)) for c in ours]
    return pred[:, index]


def champion_predictions(champion: dict[str, Any], holdout: pl.DataFrame, task_type: TaskType,
                         classes: Optional[list[Any]]) -> np.ndarray:
    """The champion's raw scores for the holdout rows, through its own stored transform."""
    transform = champion["transform"]
    if transform["target"]["task"] != task_type:
        raise DataError(f"the champion is a {transform['target']['task']} model, this version {task_type}")
    features = apply_transform(holdout, transform, "holdout rows")
    matrix = load_matrix(features.with_columns(pl.lit(0.0).alias(LABEL)), transform["feature_types"])
    pred = champion["booster"].predict(matrix)
    if task_type == "regression":
        return pred
    return reorder_classes(pred, task_type, transform["target"]["classes"], classes or [])


def gate(
    spec: PromotionSpec, task_type: TaskType, classes: Optional[list[Any]], labels: np.ndarray,
    challenger: np.ndarray, baseline: np.ndarray, holdout: pl.DataFrame, champion: Optional[dict[str, Any]],
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
                                spec.bootstrap_samples, spec.confidence, seed)
    promote, reason = judge(spec.policy, spec.margin, evidence, against)
    verdict.update(evidence=evidence, promote=promote, reason=reason,
                   champion_metrics=compute_metrics(task_type, labels, reference) if champion else None)
    return verdict


def load_champion(artifacts: str, name: str, version: Optional[int]) -> Optional[dict[str, Any]]:
    from tasks.predict import load_version

    return load_version(artifacts, f"{name}:{version}") if version is not None else None


def holdout_inputs(parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], task_type: TaskType,
                   n_classes: int) -> dict[str, Any]:
    """Labels, the challenger's and the baseline's scores and the raw rows of the holdout."""
    test = storage.read_parquet(matrices["uris"]["test"])
    labels = test.get_column(LABEL).to_numpy()
    booster = xgb.Booster(model_file=bytearray(storage.read_bytes(model["model_uri"])))
    train_labels = storage.read_parquet(matrices["uris"]["train"]).get_column(LABEL).to_numpy()
    return {
        "labels": labels,
        "challenger": booster.predict(load_matrix(test, matrices["feature_types"])),
        "baseline": baseline_predictions(task_type, train_labels, len(labels), n_classes),
        "holdout": storage.read_parquet(parts["uris"]["test"]),
    }


def run_gate(
    artifacts: str, name: str, spec: PromotionSpec, seed: int, inputs: dict[str, Any], task_type: TaskType,
    classes: Optional[list[Any]], champion_version: Optional[int],
) -> dict[str, Any]:
    try:
        champion = load_champion(artifacts, name, champion_version)
    except RegistryError as error:  # a champion whose files fail their hashes is not a fair reference
        raise RegistryError(f"champion v{champion_version} of {name!r} cannot be loaded: {error}") from None
    return gate(spec, task_type, classes, inputs["labels"], inputs["challenger"], inputs["baseline"],
                inputs["holdout"], champion, seed)


@task(name="gate", **TRANSIENT_RETRIES)
def gate_task(
    artifacts: str, name: str, spec: PromotionSpec, seed: int, parts: dict[str, Any], matrices: dict[str, Any],
    model: dict[str, Any], task_type: TaskType, classes: Optional[list[Any]],
) -> dict[str, Any]:
    """Judge the new model against the champion of the moment (or the baseline)."""
    inputs = holdout_inputs(parts, matrices, model, task_type, len(classes or []))
    champion = audit.current_aliases(audit.read_log(artifacts, name)).get(audit.CHAMPION)
    return run_gate(artifacts, name, spec, seed, inputs, task_type, classes, champion)


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

    audit.append(artifacts, name, "gate_verdict", {**fields, "version": version, "verdict": verdict})
    move, final = audit.move_alias_if(artifacts, name, audit.CHAMPION, decide,
                                      {**fields, "kind": "gate", "reason": verdict["reason"]})
    if final is not verdict and final.get("champion_version") != verdict["champion_version"]:
        audit.append(artifacts, name, "gate_verdict", {**fields, "version": version, "verdict": final,
                                                       "regated": True})
    return {**final, "moved": move is not None, "audit_seq": move["seq"] if move else None}


@task(name="promote")
def promote_task(
    artifacts: str, name: str, spec: PromotionSpec, seed: int, stored: dict[str, Any], verdict: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], task_type: TaskType,
    classes: Optional[list[Any]], trigger: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Record the verdict and move the champion; nothing at all for a re-run that reused a stored version.

    No retries: a half-done attempt must not log its verdict twice (the CAS itself never needs one).
    """
    if stored["reused"]:
        current = audit.current_aliases(audit.read_log(artifacts, name)).get(audit.CHAMPION)
        return {**verdict, "promote": current == stored["version"], "moved": False, "audit_seq": None,
                "reason": f"identical to the stored v{stored['version']}: nothing new to promote "
                          f"(champion is {'v' + str(current) if current else 'none'})"}
    cache: dict[str, Any] = {}

    def regate(current: Optional[int]) -> dict[str, Any]:
        if "inputs" not in cache:
            cache["inputs"] = holdout_inputs(parts, matrices, model, task_type, len(classes or []))
        return run_gate(artifacts, name, spec, seed, cache["inputs"], task_type, classes, current)

    fields = {"flow_run_id": _flow_run_id(), "trigger": trigger}
    return promote_version(artifacts, name, stored["version"], verdict, spec, seed, regate, fields)


def _flow_run_id() -> Optional[str]:
    from prefect.runtime import flow_run

    return flow_run.id
