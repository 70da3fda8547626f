"""Model card: what a reviewer reads before trusting a version.

`model_card.md` (also the Prefect markdown artifact) and `model_card.html`, which adds the
plots: ROC, precision-recall and calibration for classification; residuals and
predicted-vs-actual for regression. Plots are drawn as inline SVG from curve points
computed on the holdout, so the card is one self-contained file and needs no plotting
library.
"""

from __future__ import annotations

import html
from typing import Any, Optional

# --- SVG -------------------------------------------------------------------------------------

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def svg_plot(title: str, series: dict[str, dict[str, list[float]]], xlabel: str, ylabel: str,
             scatter: bool = False, diagonal: bool = False, hline: Optional[float] = None) -> str:
    """A small line or scatter chart as standalone SVG."""
    w, h, pad = 360, 300, 45
    xs = [x for s in series.values() for x in s["x"]] or [0.0, 1.0]
    ys = [y for s in series.values() for y in s["y"]] or [0.0, 1.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if diagonal:
        x0 = y0 = min(x0, y0)
        x1 = y1 = max(x1, y1)
    if hline is not None:
        y0, y1 = min(y0, hline), max(y1, hline)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (w - 1.5 * pad)

    def py(y: float) -> float:
        return h - pad - (y - y0) / (y1 - y0) * (h - 1.7 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><title>{html.escape(title)}</title>',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<rect x="{pad}" y="{0.7 * pad}" width="{w - 1.5 * pad}" height="{h - 1.7 * pad}" fill="none" '
             'stroke="#999"/>',
             f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
             f'<text x="12" y="{h / 2}" text-anchor="middle" transform="rotate(-90 12 {h / 2})">'
             f'{html.escape(ylabel)}</text>']
    for value, anchor, x, y in ((x0, "start", px(x0), h - pad + 14), (x1, "end", px(x1), h - pad + 14)):
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{value:.3g}</text>')
    for value, y in ((y0, py(y0)), (y1, py(y1) + 8)):
        parts.append(f'<text x="{pad - 4}" y="{y:.1f}" text-anchor="end">{value:.3g}</text>')
    if diagonal:
        parts.append(f'<line x1="{px(x0):.1f}" y1="{py(y0):.1f}" x2="{px(x1):.1f}" y2="{py(y1):.1f}" '
                     'stroke="#bbb" stroke-dasharray="4 3"/>')
    if hline is not None:
        parts.append(f'<line x1="{px(x0):.1f}" y1="{py(hline):.1f}" x2="{px(x1):.1f}" y2="{py(hline):.1f}" '
                     'stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, (label, s) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = list(zip(s["x"], s["y"], strict=True))
        if scatter:
            parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{colour}" fill-opacity="0.6"/>'
                         for x, y in points)
        else:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if len(series) > 1:
            parts.append(f'<text x="{w - pad}" y="{0.7 * pad + 14 + 13 * i}" text-anchor="end" fill="{colour}">'
                         f'{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


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
    return f"""# {manifest['model']} v{manifest['version']}

- task: **{manifest['task']}** ({manifest['task_reason']}), target `{manifest['target']}`
- data: {len(data['sources'])} file(s), fingerprint `{data['fingerprint'][:16]}`; rows train/valid/test
  {data['rows']['train']}/{data['rows']['valid']}/{data['rows']['test']} ({data['split_method']} split);
  {data['dropped_null_target']} row(s) dropped for a null target
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


def _md_table_html(markdown: str) -> str:
    """The card's markdown as HTML: headings, tables, bullets and paragraphs; that is all it uses."""
    out: list[str] = []
    block: list[str] = []

    def inline(text: str) -> str:
        text = html.escape(text)
        for mark, tag in (("**", "b"), ("`", "code")):
            pieces = text.split(mark)
            text = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
        return text

    def flush() -> None:
        if not block:
            return
        if block[0].startswith("|"):
            rows = [r for r in block if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif block[0].startswith("- "):
            items: list[str] = []
            for line in block:
                if line.startswith("- "):
                    items.append(line[2:].strip())
                else:
                    items[-1] += " " + line.strip()
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{inline(' '.join(x.strip() for x in block))}</p>")
        block.clear()

    for line in markdown.splitlines():
        if line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif not line.strip():
            flush()
        else:
            if block and block[0].startswith("|") != line.startswith("|"):
                flush()
            block.append(line)
    flush()
    return "\n".join(out)


def model_card_html(manifest: dict[str, Any], plots: Optional[dict[str, Any]]) -> str:
    body = _md_table_html(model_card(manifest))
    figures = "".join(f"<figure>{svg}</figure>" for svg in plot_svgs(plots)) if plots else "<p>No plots.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(manifest['model'])} v{manifest['version']}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
figure{{display:inline-block;margin:4px}}code{{background:#f3f3f3}}</style></head>
<body>{body}
<h2>Plots</h2>{figures}
</body></html>
"""


