"""Reproduce: re-run training from a version's manifest and compare the result with the stored model.

The run uses the manifest's spec and data in a fresh, temporary artifact store, so no stage
is served from a cache. Which check applies follows the stored model's training engine:

- local: the new model file is compared byte for byte with the stored one; when they differ (another
  XGBoost build, another CPU), both models score the data and the largest difference of their raw scores
  is compared with `tolerance`;
- dask, retrained on as many workers holding the same partitions (by index in sorted worker order): the
  same check as local, since the same seed, partitions and workers give the same booster bytes;
- dask on other workers or partitions: XGBoost's distributed sketch depends on each worker's rows, so the
  bytes are not expected to match; the holdout metrics must agree within `metric_tolerance`.
"""

from __future__ import annotations

import tempfile
from typing import Any, Optional

import numpy as np

from flows.train import train_flow
from trainpipe import storage
from trainpipe.cluster import layout
from trainpipe.provenance import code_version, dependency_set
from trainpipe.registry import read_manifest, resolve_version, version_uri
from trainpipe.scoring import load_version, raw_scores
from trainpipe.sources import load_files, recorded_inputs, sources_fingerprint

DEFAULT_TOLERANCE = 1e-6
DEFAULT_METRIC_TOLERANCE = 0.01
CHECK_BYTES = "byte-identical"
CHECK_METRICS = "metrics within tolerance"


def reproduce(artifacts: str, ref: str, tolerance: float = DEFAULT_TOLERANCE,
              metric_tolerance: float = DEFAULT_METRIC_TOLERANCE) -> dict[str, Any]:
    """Train again from NAME:VERSION's manifest; say which check the stored model's engine called for
    (`check`, `check_reason`), whether it passed, and what differs in data, code and dependencies."""
    name, version = resolve_version(artifacts, ref)
    manifest = read_manifest(artifacts, name, version)
    engine_then = (manifest.get("training") or {}).get("engine") or {"name": "local"}
    report: dict[str, Any] = {"model": name, "version": version, "tolerance": tolerance,
                              "engine": engine_then["name"]}
    code, deps = code_version(), dependency_set()
    report["differences"] = {
        "source_changed": code["source_sha256"] != manifest["code"]["source_sha256"],
        "git_commit_then": manifest["code"]["git_commit"], "git_commit_now": code["git_commit"],
        "dependencies_changed": deps["sha256"] != ((manifest.get("lineage") or {}).get("dependencies")
                                                   or {}).get("sha256"),
    }
    with tempfile.TemporaryDirectory(prefix="trainpipe-reproduce-") as scratch:
        spec, files = recorded_inputs(manifest, scratch, f"(manifest of {name}:{version})")
        fingerprint = sources_fingerprint(files)
        report["data_fingerprint_then"] = manifest["data"]["fingerprint"]
        report["data_fingerprint_now"] = fingerprint
        if fingerprint != manifest["data"]["fingerprint"]:
            report.update(reproduced=False, byte_identical=False,
                          reason="the training data changed since this version was trained "
                                 f"(fingerprint {manifest['data']['fingerprint'][:16]} then, {fingerprint[:16]} now)")
            return report
        result = train_flow(spec)
        new_bytes = storage.read_bytes(storage.join(result["uri"], "model.ubj"))
        old_bytes = storage.read_bytes(storage.join(version_uri(artifacts, name, version), "model.ubj"))
        report["model_sha256_then"] = storage.sha256_bytes(old_bytes)
        report["model_sha256_now"] = storage.sha256_bytes(new_bytes)
        report["byte_identical"] = new_bytes == old_bytes
        if engine_then["name"] == "dask":
            engine_now = (read_manifest(scratch, name, result["version"]).get("training") or {}).get("engine") or {}
            then, now = layout(engine_then), layout(engine_now) if engine_now.get("name") == "dask" else None
            report["layout_then"], report["layout_now"] = then, now
            if then is None or then != now:
                return _compare_metrics(report, manifest["metrics"], result["metrics"], metric_tolerance,
                                        "trained on a Dask cluster, retrained on other workers or partitions "
                                        f"(then {_describe(then)}, now {_describe(now)})")
            report["check_reason"] = (f"trained on a Dask cluster, retrained on the same layout "
                                      f"({_describe(then)}): same seed, partitions and workers give the same bytes")
        else:
            report["check_reason"] = "trained on one machine: the same seed and data give the same bytes"
        report["check"] = CHECK_BYTES
        if report["byte_identical"]:
            report.update(reproduced=True, reason="the retrained model file is byte-identical to the stored one")
            return report
        frame = load_files(files, spec.data)
        old = load_version(artifacts, f"{name}:{version}")
        new = load_version(scratch, f"{name}:{result['version']}")
        gap = float(np.max(np.abs(raw_scores(old, frame) - raw_scores(new, frame))))
        report["max_abs_score_difference"] = gap
        report["reproduced"] = gap <= tolerance
        report["reason"] = (f"model files differ, but raw scores on the {frame.height} training-data rows agree "
                            f"within {tolerance:g} (largest difference {gap:.3g})" if report["reproduced"] else
                            f"model files differ and raw scores differ by up to {gap:.3g} (tolerance {tolerance:g})")
        return report


def _describe(layout_: Optional[dict[str, Any]]) -> str:
    if layout_ is None:
        return "no recorded placement"
    parts = ", ".join(f"{len(v)} {k} partitions" for k, v in layout_.items() if k != "workers")
    return f"{layout_['workers']} workers, {parts}"


def _compare_metrics(report: dict[str, Any], then: dict[str, Any], now: dict[str, Any], metric_tolerance: float,
                     why: str) -> dict[str, Any]:
    """The dask check when the layout differs: every holdout metric within `metric_tolerance`."""
    gaps = {k: abs(float(now[k]) - float(v)) for k, v in then.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(now.get(k), (int, float))}
    worst = max(gaps, key=gaps.__getitem__) if gaps else None
    report.update(check=CHECK_METRICS, check_reason=why, metric_tolerance=metric_tolerance, metric_differences=gaps)
    report["reproduced"] = bool(gaps) and all(g <= metric_tolerance for g in gaps.values())
    report["reason"] = (f"holdout metrics agree within {metric_tolerance:g} (largest difference "
                        f"{gaps[worst]:.3g} in {worst})" if report["reproduced"] else
                        f"holdout metrics differ by more than {metric_tolerance:g}: {worst} by "
                        f"{gaps[worst]:.3g}" if worst else "no holdout metric to compare")
    return report
