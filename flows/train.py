"""The training flow: ingest -> validate -> split -> features -> fit (tune, train) -> evaluate -> gate -> store
-> promote."""

from __future__ import annotations

from typing import Any, Optional

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.fit import fit_part
from flows.hooks import mark_failed_trigger
from tasks.common import run_stage
from tasks.drift import drift_task
from tasks.evaluate import evaluate_task
from tasks.features import features_task
from tasks.gate import gate_task
from tasks.ingest import fingerprint_task, ingest_task
from tasks.plots import plots_task
from tasks.promote import promote_task
from tasks.split import split_task
from tasks.store import store_task
from tasks.validate import contract_ref_task, validate_task
from trainpipe import storage
from trainpipe.spec import TrainSpec


@flow(name="trainpipe-train", task_runner=ThreadPoolTaskRunner(max_workers=2), persist_result=True,
      result_serializer="json", on_failure=[mark_failed_trigger], on_crashed=[mark_failed_trigger])
def train_flow(spec: TrainSpec, trigger: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train, evaluate and store one model version from raw tabular data; promote it if it passes the gate.

    `trigger` (the event that started the run, when there is one) is recorded in the lineage and audit log.
    """
    logger = get_run_logger()
    artifacts = storage.normalize_root(spec.artifacts)
    stages: dict[str, Any] = {}
    sources = fingerprint_task(spec.data)
    snapshot = run_stage(stages, "ingest", ingest_task, sources, spec.data, artifacts)
    contract = contract_ref_task(artifacts, spec.name, snapshot, spec.target, spec.task, spec.id_columns,
                                 spec.drop_columns)
    validated = run_stage(stages, "validate", validate_task, snapshot, spec.target, spec.task, spec.id_columns,
                          spec.drop_columns, spec.split.time_column, spec.validation, contract, artifacts)
    parts = run_stage(stages, "split", split_task, validated, spec.split, spec.target, validated["task"],
                      spec.seed, artifacts)
    matrices = run_stage(stages, "features", features_task, parts, validated, spec.target, spec.id_columns,
                         spec.features, artifacts)
    n_classes = len(validated["classes"] or [])
    model = fit_part(spec, matrices, validated["task"], n_classes)  # tune + train, here or on compute.train_pool
    stages.update(model["stages"])
    evaluation = run_stage(stages, "evaluate", evaluate_task, matrices, model, validated["task"], n_classes)
    classes = validated["classes"]
    verdict = gate_task(artifacts, spec.name, spec.promotion, spec.seed, parts, matrices, model, validated["task"],
                        classes)
    drift = drift_task(artifacts, spec.name, parts, [spec.target, *spec.id_columns], verdict["champion_version"])
    plots = plots_task(matrices, model, validated["task"], classes)
    stored = store_task(spec, sources, snapshot, validated, parts, matrices, model, evaluation, stages,
                        verdict=verdict, drift=drift, plots=plots, trigger=trigger)
    promotion = promote_task(artifacts, spec.name, spec.promotion, spec.seed, stored, verdict, parts, matrices,
                             model, validated["task"], classes, trigger)
    logger.info("model %s version %s at %s%s; %s", spec.name, stored["version"], stored["uri"],
                " (identical to a stored version: reused)" if stored["reused"] else "", promotion["reason"])
    return {
        "model": spec.name,
        "version": stored["version"],
        "uri": stored["uri"],
        "reused": stored["reused"],
        "task": validated["task"],
        "task_inferred": spec.task is None,
        "task_reason": validated["task_reason"],
        "headline_metric": evaluation["headline_metric"],
        "metrics": evaluation["metrics"],
        "baseline_metrics": evaluation["baseline_metrics"],
        "rows": parts["rows"],
        "dropped_null_target": validated["dropped_null_target"],
        "contract_violations": validated["violations"],
        "dropped_features": matrices["dropped"],
        "data_fingerprint": sources["fingerprint"],
        "stages": stages,
        "tuning": model.get("tuning"),
        "promoted": promotion["moved"],
        "promotion": {k: promotion.get(k) for k in ("promote", "moved", "reason", "policy", "metric", "against",
                                                     "champion_version", "evidence", "audit_seq")},
        "drift_large_shifts": ((drift.get("drift") or {}).get("large_shifts") or []),
        "fit_run": model.get("flow_run"),
        "trigger": trigger,
    }

