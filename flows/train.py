"""The training flow: ingest -> validate -> split -> features -> fit (tune, train) -> [an identical version
already judged? stop] -> evaluate -> gate -> drift -> plots -> store -> promote."""

from __future__ import annotations

from typing import Any, Optional

from prefect import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.base import trainpipe_flow
from flows.fit import fit_part
from flows.hooks import mark_failed_trigger
from tasks.common import run_stage
from tasks.drift import drift_task
from tasks.evaluate import evaluate_task
from tasks.features import features_task
from tasks.gate import gate_task
from tasks.ingest import fingerprint_task, ingest_task, memory_plan_task
from tasks.plots import plots_task
from tasks.promote import promote_task
from tasks.split import split_task
from tasks.store import find_stored_task, store_task
from tasks.validate import contract_ref_task, validate_task
from trainpipe import storage
from trainpipe.results import Outcome, RunContext
from trainpipe.spec import TrainSpec


@trainpipe_flow(name="trainpipe-train", task_runner=ThreadPoolTaskRunner(max_workers=2), persist_result=True,
      result_serializer="json", on_failure=[mark_failed_trigger], on_crashed=[mark_failed_trigger])
def train_flow(spec: TrainSpec, trigger: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train, evaluate and store one model version from raw tabular data; promote it if it passes the gate.

    `trigger` (the event that started the run, when there is one) is recorded in the lineage and audit log.
    """
    artifacts = storage.normalize_root(spec.artifacts)
    stages: dict[str, Any] = {}
    sources = fingerprint_task(spec.data)
    memory = memory_plan_task(sources, spec.compute.external_memory)  # out of core or not, decided once
    snapshot = run_stage(stages, "ingest", ingest_task, sources, spec.data, artifacts, memory.out_of_core)
    contract = contract_ref_task(artifacts, spec.name, snapshot, spec.target, spec.task, spec.id_columns,
                                 spec.drop_columns)
    validated = run_stage(stages, "validate", validate_task, snapshot, spec.target, spec.task, spec.id_columns,
                          spec.drop_columns, spec.split.time_column, spec.validation, contract, artifacts,
                          memory.out_of_core)
    parts = run_stage(stages, "split", split_task, validated, spec.split, spec.target, validated.task_type, spec.seed,
                      artifacts, memory.out_of_core)
    matrices = run_stage(stages, "features", features_task, parts, validated, spec.target, spec.id_columns,
                         spec.features, artifacts, spec.compute.partition_rows, memory.out_of_core)
    fit = fit_part(spec, matrices, validated)  # tune + train, here or on compute.train_pool
    stages.update(fit.stages)
    run = RunContext(spec=spec, artifacts=artifacts, sources=sources, snapshot=snapshot, validated=validated,
                     parts=parts, matrices=matrices, fit=fit, stages=stages, trigger=trigger, memory=memory)
    outcome = find_stored_task(run)
    if outcome is None:
        evaluation = run_stage(stages, "evaluate", evaluate_task, matrices, fit.model, validated.task_type,
                               validated.n_classes, artifacts)
        run = run.model_copy(update={"stages": stages})
        verdict = run_stage(stages, "gate", gate_task, run, evaluation)
        drift = run_stage(stages, "drift", drift_task, run, verdict.champion_version)
        plots = run_stage(stages, "plots", plots_task, evaluation, validated.task_type, validated.classes)
        stored = run_stage(stages, "store", store_task, run, evaluation, verdict, drift, plots)
        promotion = run_stage(stages, "promote", promote_task, run, evaluation, stored, verdict)
        outcome = Outcome.of(stored, evaluation, promotion, drift)
    get_run_logger().info("model %s version %s at %s%s; %s", spec.name, outcome.stored.version, outcome.stored.uri,
                          " (identical to a stored version: reused)" if outcome.stored.reused else "",
                          outcome.promotion.reason)
    return run.summary(outcome)
