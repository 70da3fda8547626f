"""Model card: what a reviewer reads before trusting a version.

`model_card.md` (also the Prefect markdown artifact) and `model_card.html`, which adds the
plots: ROC, precision-recall and calibration for classification; residuals and
predicted-vs-actual for regression. Plots are drawn as inline SVG from curve points
computed on the holdout, so the card is one self-contained file and needs no plotting
library.
"""

from __future__ import annotations

from typing import Any, Optional

from trainpipe.svg import chart, escape

# --- SVG -------------------------------------------------------------------------------------


def svg_plot(title: str, series: dict[str, dict[str, list[float]]], xlabel: str, ylabel: str,
             scatter: bool = False, diagonal: bool = False, hline: Optional[float] = None) -> str:
    """A card chart: every series as a line, or as points with `scatter`."""
    kind = "points" if scatter else "line"
    return chart(title, {name: {**s, "kind": kind} for name, s in series.items()}, xlabel, ylabel,
                 diagonal=diagonal, hline=hline)


def plot_svgs(plots: dict[str, Any]) -> list[str]:
    if plots["kind"] == "regression":
        return [svg_plot("Predicted vs actual", {"rows": plots["predicted_vs_actual"]}, "actual", "predicted",
                         scatter=True, diagonal=True),
                svg_plot("Residuals", {"rows": plots["residuals"]}, "predicted", "actual - predicted",
                         scatter=True, hline=0.0)]
    return [svg_plot("ROC (holdout)", plots["roc"], "false positive rate", "true positive rate", diagonal=True),
            svg_plot("Precision-recall (holdout)", plots["pr"], "recall", "precision"),
            svg_plot("Calibration (holdout)", {c: {"x": p["x"], "y": p["y"]} for c, p in plots["calibration"].items()},
                     "mean predicted probability", "observed share", diagonal=True)]


# --- the card ---------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_rows(manifest: dict[str, Any]) -> list[list[Any]]:
    champion = (manifest.get("promotion") or {}).get("champion_metrics") or {}
    return [[k, v, manifest["baseline_metrics"].get(k), champion.get(k)] for k, v in manifest["metrics"].items()]


def drift_rows(drift: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for column, d in drift["columns"].items():
        if d.get("missing_now"):
            rows.append([column, None, "column missing now", None, None, ""])
            continue
        changes = ", ".join([*(f"+{v}" for v in d.get("new_categories", [])),
                             *(f"−{v}" for v in d.get("vanished_categories", []))])
        rows.append([column, d["psi"], d["shift"], d["null_rate_before"], d["null_rate_now"], changes])
    return rows


def gate_lines(manifest: dict[str, Any]) -> str:
    verdict = manifest.get("promotion")
    if not verdict:
        return "No gate verdict recorded."
    lines = [f"**{verdict['reason']}**",
             f"(policy `{verdict['policy']}`, metric `{verdict['metric']}`, margin {verdict['margin']:g}, "
             f"compared with the {verdict['against']}"
             + (f" v{verdict['champion_version']}" if verdict.get("champion_version") else "") + ")"]
    return "\n\n".join(lines)


def model_card(manifest: dict[str, Any]) -> str:
    """A markdown summary of a version for reviewers (also shown as a Prefect artifact)."""
    top = _table(["feature", "gain share", "splits"],
                 [[r["feature"], r["gain_share"], r["splits"]] for r in manifest["importance_top"]])
    data = manifest["data"]
    dropped = "".join(f"\n- dropped `{d['column']}`: {d['reason']}" for d in manifest["features"]["dropped"])
    code = manifest["code"]
    lineage = manifest.get("lineage") or {}
    deps = lineage.get("dependencies") or {}
    trigger = lineage.get("trigger")
    drift = manifest.get("drift")
    if drift:
        drift_text = (f"Training data against champion v{drift['champion_version']}'s "
                      f"({drift['rows_before']} → {drift['rows_now']} training rows). PSI below 0.1 is stable, "
                      "above 0.25 a large shift.\n\n"
                      + _table(["column", "PSI", "shift", "null rate before", "null rate now", "categories ±"],
                               drift_rows(drift)))
        if drift["new_columns"]:
            drift_text += f"\n\nNew columns: {', '.join(drift['new_columns'])}"
    else:
        drift_text = "No champion to compare with (or it has no stored data profile)."
    leakage = data.get("leakage") or []
    leakage = (f"\n- **warning: likely target leakage**: {', '.join(f'`{c}`' for c in leakage)} equal the target "
               "in every row") if leakage else ""
    return f"""# {manifest['model']} v{manifest['version']}

- task: **{manifest['task']}** ({manifest['task_reason']}), target `{manifest['target']}`
- data: {len(data['sources'])} file(s), fingerprint `{data['fingerprint'][:16]}`; rows train/valid/test
  {data['rows']['train']}/{data['rows']['valid']}/{data['rows']['test']} ({data['split_method']} split);
  {data['dropped_null_target']} row(s) dropped for a null target{leakage}
- model: XGBoost hist, {manifest['training']['best_iteration'] + 1} rounds (early stopping on
  {manifest['training']['validation_metric']}), sha256 `{manifest['model_sha256'][:16]}`
- code: {code['git_commit'] or 'no git'}{' (dirty)' if code['git_dirty'] else ''},
  source `{code['source_sha256'][:16]}`; dependencies `{(deps.get('sha256') or 'unknown')[:16]}`
  ({len(deps.get('pins') or [])} pins); Prefect run `{manifest['prefect']['flow_run_id']}`
- created {manifest['created_at']} by {manifest['created_by']}{'; trigger: ' + fmt(trigger) if trigger else ''}{dropped}

## Promotion gate

{gate_lines(manifest)}

## Holdout metrics

{_table(['metric', 'model', 'trivial baseline', 'champion (same rows)'], metric_rows(manifest))}

## Data drift

{drift_text}

## Most important features (share of total gain)

{top}

Plots (ROC, precision-recall, calibration or residuals): `model_card.html` in this folder.
"""


def markdown_html(markdown: str) -> str:
    """The card's markdown as HTML (CommonMark with tables); raw HTML in values is escaped, never passed on."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def model_card_html(manifest: dict[str, Any], plots: Optional[dict[str, Any]]) -> str:
    body = markdown_html(model_card(manifest))
    figures = "".join(f"<figure>{svg}</figure>" for svg in plot_svgs(plots)) if plots else "<p>No plots.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(manifest['model'])} v{manifest['version']}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
figure{{display:inline-block;margin:4px}}code{{background:#f3f3f3}}</style></head>
<body>{body}
<h2>Plots</h2>{figures}
</body></html>
"""


