"""tasks.card: curve points and the self-contained HTML card."""

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
