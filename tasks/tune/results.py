"""Results of a study: leaderboard, parameter importances, the summary, the best parameters, the
published files (leaderboard, history picture) and artifacts."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.tune.sampler import SAMPLER
from tasks.tune.search import counts
from trainpipe import storage
from trainpipe.errors import TuningError
from trainpipe.spec import TuningSpec
from trainpipe.svg import chart


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
                     "params": {k: storage.plain_scalar(v) for k, v in sorted(t.params.items())},
                     "rounds": (t.last_step + 1) if t.last_step is not None else None,
                     "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error")})
    rows.sort(key=lambda r: (order[TrialState[r["state"]]], r["value"] if r["value"] is not None else math.inf,
                             r["trial"]))
    return rows


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
    points = sorted((r for r in rows if r["value"] is not None and math.isfinite(r["value"])),
                    key=lambda r: r["trial"])
    if not points:
        return chart(f"{title}: no finished trials", {}, "trial", f"{metric} (validation)", width=640, height=360)
    series: dict[str, dict[str, Any]] = {}
    for state, label, colour in (("COMPLETE", "complete", "#1f77b4"), ("PRUNED", "pruned", "#aaaaaa")):
        chosen = [r for r in points if (r["state"] == "COMPLETE") == (state == "COMPLETE")]
        if chosen:
            series[label] = {"kind": "points", "colour": colour, "x": [r["trial"] for r in chosen],
                             "y": [r["value"] for r in chosen],
                             "titles": [f"trial {r['trial']} {r['state']}: {r['value']:.6g}" for r in chosen]}
    best, line_x, line_y = math.inf, [], []
    for r in points:
        if r["state"] == "COMPLETE" and r["value"] < best:
            best = r["value"]
        if math.isfinite(best):
            line_x.append(r["trial"])
            line_y.append(best)
    if line_x:
        series["best so far"] = {"kind": "line", "colour": "#d62728", "x": line_x, "y": line_y}
    return chart(title, series, "trial", f"{metric} (validation)", width=640, height=360) + "\n"


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
        "best_params": {k: storage.plain_scalar(v) for k, v in sorted(best.params.items())},
        "best_iteration": best.user_attrs.get("best_iteration"),
        "best_cut_by_timeout": bool(best.user_attrs.get("cut_by_timeout", False)),
    }


def best_params(study: optuna.Study, fixed: dict[str, Any]) -> dict[str, Any]:
    """The best trial's parameters, fixed ones included: what the train stage refits with."""
    return {**{k: storage.plain_scalar(v) for k, v in study.best_trial.params.items()}, **fixed}


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
