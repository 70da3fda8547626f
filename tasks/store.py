"""Store: build a version's manifest and publish the version atomically in the registry."""

from __future__ import annotations

import time
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from tasks.common import TRANSIENT_RETRIES
from trainpipe import registry, storage
from trainpipe.audit import whoami
from trainpipe.card import model_card, model_card_html
from trainpipe.errors import RegistryError
from trainpipe.provenance import code_version, dependency_set, now_iso, package_versions
from trainpipe.registry import (
    CLAIM,
    MANIFEST,
    MANIFEST_FORMAT,
    PROFILE_FILE,
    complete_publication,
    find_identical,
    publish_or_join,
    read_manifest,
    version_uri,
)
from trainpipe.results import Drift, Evaluation, Outcome, Promotion, RunContext, Stored, Verdict


def build_manifest(run: RunContext, evaluation: Evaluation, verdict: Optional[Verdict] = None,
                   drift: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Everything a version must answer: data, code, parameters, run, trigger, results, gate verdict, drift."""
    spec, validated, parts, matrices, model = run.spec, run.validated, run.parts, run.matrices, run.model
    spec_json = spec.model_dump(mode="json")
    return {
        "format": MANIFEST_FORMAT,
        "created_at": now_iso(),
        "created_by": whoami(),
        "task": validated.task_type,
        "task_reason": validated.task_reason,
        "target": spec.target,
        "classes": validated.classes,
        "model_file": "model.ubj",
        "model_sha256": model.model_sha256,
        "identity": run.identity,
        "data": {
            "fingerprint": run.sources.fingerprint,
            "sources": run.sources.files,
            "snapshot_uri": run.snapshot.uri,
            "rows": parts.rows,
            "split_method": parts.method,
            "dropped_null_target": validated.dropped_null_target,
            "leakage": validated.leakage,
        },
        "features": {"names": matrices.features, "dropped": matrices.dropped},
        "spec": spec_json,
        "spec_sha256": storage.sha256_bytes(storage.dumps_json(spec_json)),
        "seed": spec.seed,
        "training": model.model_dump(include={"params", "rounds_trained", "best_iteration", "best_validation_score",
                                              "validation_metric", "refit_on_train_and_valid", "rounds_from_trial",
                                              "engine"}),
        "tuning": model.tuning or {"trials": spec.tuning.trials, "performed": False},
        "metrics": evaluation.metrics,
        "baseline_metrics": evaluation.baseline_metrics,
        "headline_metric": evaluation.headline_metric,
        "importance_top": evaluation.importance[:10],
        "code": code_version(),
        "packages": package_versions(),
        "prefect": {
            "flow_run_id": flow_run.id,
            "flow_run_name": flow_run.name,
            "deployment_id": deployment.id,
            "parameters_from": "deployment" if deployment.id else "direct call",
        },
        "stages": run.stages,
        "lineage": {"dependencies": dependency_set(), "trigger": run.trigger},
        "promotion": verdict.model_dump(mode="json") if verdict else None,
        "drift": drift,
    }


def existing_version(artifacts: str, name: str, identity: dict[str, str]) -> Optional[dict[str, Any]]:
    """An identical committed version, made whole (its publication record appended if a run died before
    it): version, URI, whether it already has its verdict (`reused`), and what was repaired."""
    version = find_identical(artifacts, name, identity)
    if version is None:
        return None
    repaired, judged = complete_publication(artifacts, name, version)
    return {"version": version, "uri": version_uri(artifacts, name, version), "reused": judged,
            "repaired": repaired}


def store_version(
    artifacts: str, name: str, manifest: dict[str, Any], evaluation: dict[str, Any],
    model_uri: str, transform_uri: str, contract_uri: str, report_uri: str,
    attachments: Optional[dict[str, str]] = None, profile: Optional[dict[str, Any]] = None,
    plots: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Publish a version unless an identical one exists; returns version, URI, whether it was reused (an
    identical version that has its verdict) and what was repaired on an identical one.

    `attachments` ({filename: uri}, e.g. a tuning leaderboard) are copied into the version folder
    before the commit and hashed in the manifest like every other file.
    """
    existing = existing_version(artifacts, name, manifest["identity"])
    if existing is not None:
        return existing
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
    version, folder, joined = publish_or_join(
        artifacts, name, files, manifest, render_card=model_card,
        render_extra=lambda full: {"model_card.html": model_card_html(full, plots).encode()})
    # joined: an identical run claimed first and published it; that run records the verdict
    return {"version": version, "uri": folder, "reused": joined, "repaired": []}


@task(name="find-stored", **TRANSIENT_RETRIES)
def find_stored_task(run: RunContext) -> Optional[Outcome]:
    """The outcome of an identical version that already has its verdict, read from its manifest: a re-run
    that changes nothing stops here (no evaluation, gate, drift, plots or card again)."""
    started = time.perf_counter()
    existing = existing_version(run.artifacts, run.spec.name, run.identity)
    if existing is None or not existing["reused"]:
        return None
    manifest = read_manifest(run.artifacts, run.spec.name, existing["version"])
    promotion = Promotion.unchanged(manifest.get("promotion") or {}, existing["version"],
                                    registry.champion(run.artifacts, run.spec.name))
    stored = Stored(**existing, seconds=round(time.perf_counter() - started, 3))
    return Outcome(stored=stored, metrics=manifest["metrics"], baseline_metrics=manifest["baseline_metrics"],
                   headline_metric=manifest["headline_metric"], promotion=promotion,
                   drift_large_shifts=((manifest.get("drift") or {}).get("large_shifts") or []))


@task(name="store", **TRANSIENT_RETRIES)
def store_task(run: RunContext, evaluation: Evaluation, verdict: Verdict, drift: Drift,
               plots: Optional[dict[str, Any]] = None) -> Stored:
    started = time.perf_counter()
    manifest = build_manifest(run, evaluation, verdict=verdict, drift=drift.report)
    result = store_version(run.artifacts, run.spec.name, manifest, evaluation.model_dump(mode="json"),
                           run.model.model_uri, run.matrices.transform_uri, run.validated.contract_uri,
                           run.validated.report_uri, attachments=run.model.attachments, profile=drift.profile,
                           plots=plots)
    card = storage.read_bytes(storage.join(result["uri"], "model_card.md")).decode()
    create_markdown_artifact(key="model-summary", markdown=card,
                             description=f"{run.spec.name} v{result['version']}")
    return Stored(**result, seconds=round(time.perf_counter() - started, 3))
