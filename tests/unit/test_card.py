"""tasks.plots and trainpipe.card: curve points, the SVG charts and the self-contained HTML card."""

from __future__ import annotations

import numpy as np

from tasks.plots import calibration_points, plot_data, pr_points, roc_points
from trainpipe.card import plot_svgs


def test_roc_pr_and_calibration_points():
    labels = np.array([0, 0, 1, 1], dtype=float)
    perfect = np.array([0.1, 0.2, 0.8, 0.9])
    roc = roc_points(labels, perfect)
    assert (roc["x"][0], roc["y"][0], roc["x"][-1], roc["y"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc["y"][2] == 1.0 and roc["x"][2] == 0.0  # both positives ranked first
    assert pr_points(labels, perfect)["y"][:2] == [1.0, 1.0]
    calibration = calibration_points(labels, perfect)
    assert calibration["n"] == [1, 1, 1, 1] and calibration["y"] == [0.0, 0.0, 1.0, 1.0]


def test_plots_per_task():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50).astype(float)
    multi = plot_data("multiclass", labels, rng.dirichlet([1, 1, 1], 50), ["a", "b", "c"])
    assert set(multi["roc"]) == {"a", "b", "c"} and len(plot_svgs(multi)) == 3
    y = rng.normal(size=50)
    regression = plot_data("regression", y, y + 0.1, None)
    assert np.allclose(regression["residuals"]["y"], -0.1)
    svgs = plot_svgs(regression)
    assert len(svgs) == 2 and all(s.startswith("<svg") and s.endswith("</svg>") for s in svgs)


def test_card_markdown_renders_tables_and_escapes_html():
    from trainpipe.card import markdown_html

    page = markdown_html("# m <b>v1</b>\n\n**promoted**: `x`\n\n| feature | gain |\n|---|---|\n"
                         "| <script>alert(1)</script> | 0.5 |\n")
    assert "<table>" in page and "<td>0.5</td>" in page and "<strong>promoted</strong>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>" not in page


def test_one_svg_helper_draws_card_curves_and_tuning_history():
    import xml.etree.ElementTree as ET

    from tasks.tune.results import history_svg
    from trainpipe.svg import chart

    rows = [{"trial": i, "value": 1.0 / (i + 1), "state": "COMPLETE" if i % 2 else "PRUNED"} for i in range(6)]
    history = ET.fromstring(history_svg(rows, "logloss", "study <s>"))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(history.findall(f"{ns}circle")) == 6 and len(history.findall(f"{ns}polyline")) == 1
    line = ET.fromstring(chart("t", {"a": {"x": [0, 1], "y": [0, 1]}}, "x", "y"))
    assert len(line.findall(f"{ns}polyline")) == 1 and not line.findall(f"{ns}circle")
