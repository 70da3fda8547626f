"""Results of a study: leaderboard, parameter importances, the summary, the best parameters, the
published files (leaderboard, history picture) and artifacts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.tune.sampler import SAMPLER
from tasks.tune.search import counts
from trainpipe import storage
from trainpipe.errors import TuningError
from trainpipe.spec import TuningSpec


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
