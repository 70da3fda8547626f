"""Reproduce: re-run training from a version's manifest and compare the result with the stored model.

The run uses the manifest's spec and data in a fresh, temporary artifact store, so no stage
is served from a cache. The new model file is compared byte for byte with the stored one;
when they differ (another XGBoost build, another CPU), both models score the data and the
largest difference of their raw scores is compared with a stated tolerance.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from flows.train import train_flow
from trainpipe import storage
from trainpipe.provenance import code_version, dependency_set
from trainpipe.registry import read_manifest, resolve_version, version_uri
from trainpipe.scoring import load_version, raw_scores
from trainpipe.sources import load_files, recorded_inputs, sources_fingerprint

DEFAULT_TOLERANCE = 1e-6


def reproduce(artifacts: str, ref: str, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Train again from NAME:VERSION's manifest; say whether the model is byte-identical or agrees within
    `tolerance`, and what differs in data, code and dependencies."""
    name, version = resolve_version(artifacts, ref)
    manifest = read_manifest(artifacts, name, version)
    report: dict[str, Any] = {"model": name, "version": version, "tolerance": tolerance}
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
