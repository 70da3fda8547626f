"""Small standalone SVG charts (no plotting library): the model card's curves and the tuning history."""

from __future__ import annotations

import html
from typing import Any, Optional

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def escape(text: Any) -> str:
    """Text made safe inside SVG or HTML markup."""
    return html.escape(str(text))


def chart(title: str, series: dict[str, dict[str, Any]], xlabel: str, ylabel: str, *, diagonal: bool = False,
          hline: Optional[float] = None, width: int = 360, height: int = 300) -> str:
    """A line and/or scatter chart as standalone SVG.

    Each series holds `x` and `y`, and optionally `kind` ("line", the default, or "points"), `colour`
    and `titles` (one tooltip per point). A legend is drawn when there is more than one series.
    """
    w, h, pad = width, height, 45
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
             f'font-size="11"><title>{escape(title)}</title>',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
             f'<rect x="{pad}" y="{0.7 * pad}" width="{w - 1.5 * pad}" height="{h - 1.7 * pad}" fill="none" '
             'stroke="#999"/>',
             f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">{escape(xlabel)}</text>',
             f'<text x="12" y="{h / 2}" text-anchor="middle" transform="rotate(-90 12 {h / 2})">'
             f'{escape(ylabel)}</text>']
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
        colour = s.get("colour") or COLOURS[i % len(COLOURS)]
        points = list(zip(s["x"], s["y"], strict=True))
        if s.get("kind") == "points":
            titles = s.get("titles") or [None] * len(points)
            for (x, y), tip in zip(points, titles, strict=True):
                tooltip = f"<title>{escape(tip)}</title>" if tip else ""
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}" '
                             f'fill-opacity="0.7">{tooltip}</circle>')
        else:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if len(series) > 1:
            parts.append(f'<text x="{w - pad}" y="{0.7 * pad + 14 + 13 * i}" text-anchor="end" fill="{colour}">'
                         f'{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
