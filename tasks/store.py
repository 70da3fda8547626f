"""Store: build a version's manifest and publish the version atomically in the registry."""

from __future__ import annotations

import time
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from tasks.common import TRANSIENT_RETRIES
from trainpipe import storage
from trainpipe.audit import whoami
from trainpipe.card import model_card, model_card_html
from trainpipe.errors import RegistryError
from trainpipe.provenance import code_version, dependency_set, package_versions
from trainpipe.registry import (
    CLAIM,
    MANIFEST,
    MANIFEST_FORMAT,
    PROFILE_FILE,
    find_identical,
    now_iso,
    publish_version,
    version_uri,
)
from trainpipe.spec import TrainSpec


def build_manifest(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any], verdict: Optional[dict[str, Any]] = None, drift: Optional[dict[str, Any]] = None,
    trigger: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Everything a version must answer: data, code, parameters, run, trigger, results, gate verdict, drift."""
    spec_json = spec.model_dump(mode="json")
    return {
        "format": MANIFEST_FORMAT,
        "created_at": now_iso(),
        "created_by": whoami(),
        "task": validated["task"],
        "task_reason": validated["task_reason"],
        "target": spec.target,
        "classes": validated["classes"],
        "model_file": "model.ubj",
        "model_sha256": model["model_sha256"],
        "identity": {"model_sha256": model["model_sha256"], "data": sources["fingerprint"],
                     "transform": matrices["fingerprint"]},
        "data": {
            "fingerprint": sources["fingerprint"],
            "sources": sources["files"],
            "snapshot_uri": snapshot["uri"],
            "rows": parts["rows"],
            "split_method": parts["method"],
            "dropped_null_target": validated["dropped_null_target"],
        },
        "features": {"names": matrices["features"], "dropped": matrices["dropped"]},
        "spec": spec_json,
        "spec_sha256": storage.sha256_bytes(storage.dumps_json(spec_json)),
        "seed": spec.seed,
        "training": {k: model[k] for k in ("params", "rounds_trained", "best_iteration",
                                               "best_validation_score", "validation_metric",
                                               "refit_on_train_and_valid")},
        "tuning": model.get("tuning") or {"trials": spec.tuning.trials, "performed": False},
        "metrics": evaluation["metrics"],
        "baseline_metrics": evaluation["baseline_metrics"],
        "headline_metric": evaluation["headline_metric"],
        "importance_top": evaluation["importance"][:10],
        "code": code_version(),
        "packages": package_versions(),
        "prefect": {
            "flow_run_id": flow_run.id,
            "flow_run_name": flow_run.name,
            "deployment_id": deployment.id,
            "parameters_from": "deployment" if deployment.id else "direct call",
        },
        "stages": stages,
        "lineage": {"dependencies": dependency_set(), "trigger": trigger},
        "promotion": verdict,
        "drift": drift,
    }



def store_version(
    artifacts: str, name: str, manifest: dict[str, Any], evaluation: dict[str, Any],
    model_uri: str, transform_uri: str, contract_uri: str, report_uri: str,
    attachments: Optional[dict[str, str]] = None, profile: Optional[dict[str, Any]] = None,
    plots: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Publish a version unless an identical one exists; returns version, URI and whether it was reused.

    `attachments` ({filename: uri}, e.g. a tuning leaderboard) are copied into the version folder
    before the commit and hashed in the manifest like every other file.
    """
    existing = find_identical(artifacts, name, manifest["identity"])
    if existing is not None:
        return {"version": existing, "uri": version_uri(artifacts, name, existing), "reused": True}
    files = {
        "model.ubj": storage.read_bytes(model_uri),
        "transform.json": storage.read_bytes(transform_uri),
        "contract.json": storage.read_bytes(contract_uri),
        "validation_report.json": storage.read_bytes(report_uri),
        "metrics.json": storage.dumps_json({k: evaluation[k] for k in ("metrics", "baseline_metrics",
                                                                         "headline_metric", "test_rows")}),
        "feature_importance.json": storage.dumps_json(evaluation["importance"]),
    }
    if profile is not None:
        files[PROFILE_FILE] = storage.dumps_json(profile)
    for filename, uri in sorted((attachments or {}).items()):
        if "/" in filename or filename in files or filename.startswith("_") or filename in (MANIFEST, CLAIM):
            raise RegistryError(f"attachment name {filename!r} is not a plain, unused file name")
        files[filename] = storage.read_bytes(uri)
    manifest = {**manifest, "attachments": sorted(attachments or {})}
    version, folder = publish_version(
        artifacts, name, files, manifest, render_card=model_card,
        render_extra=lambda full: {"model_card.html": model_card_html(full, plots).encode()})
    return {"version": version, "uri": folder, "reused": False}



@task(name="store", **TRANSIENT_RETRIES)
def store_task(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any], verdict: Optional[dict[str, Any]] = None, drift: Optional[dict[str, Any]] = None,
    plots: Optional[dict[str, Any]] = None, trigger: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    artifacts = storage.normalize_root(spec.artifacts)
    manifest = build_manifest(spec, sources, snapshot, validated, parts, matrices, model, evaluation, stages,
                              verdict=verdict, drift=(drift or {}).get("drift"), trigger=trigger)
    result = store_version(artifacts, spec.name, manifest, evaluation, model["model_uri"],
                           matrices["transform_uri"], validated["contract_uri"], validated["report_uri"],
                           attachments=model.get("attachments"), profile=(drift or {}).get("profile"), plots=plots)
    card = storage.read_bytes(storage.join(result["uri"], "model_card.md")).decode()
    create_markdown_artifact(key="model-summary", markdown=card, description=f"{spec.name} v{result['version']}")
    return {**result, "seconds": round(time.perf_counter() - started, 3)}
