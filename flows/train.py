"""The training flow: ingest -> validate -> split -> features -> train -> evaluate -> store."""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.fit import fit_part
from flows.hooks import mark_failed_trigger
from tasks.evaluate import evaluate_task
from tasks.features import features_task
from tasks.ingest import fingerprint_task, ingest_task
from tasks.registry import contract_ref_task, store_task
from tasks.split import split_task
from tasks.validate import validate_task
from trainpipe import storage
from trainpipe.spec import TrainSpec


def run_stage(stages: dict[str, Any], name: str, stage: Any, *args: Any) -> dict[str, Any]:
    """Run a stage task; note whether it was served from cache (Prefect's or the store's) and its time."""
    state = stage(*args, return_state=True)
    result = state.result()
    cached = state.name == "Cached" or bool(result.get("from_store"))
    stages[name] = {"cached": cached, "seconds": 0.0 if cached else result.get("seconds", 0.0)}
    return result


@flow(name="trainpipe-train", task_runner=ThreadPoolTaskRunner(max_workers=2), persist_result=True,
      result_serializer="json", on_failure=[mark_failed_trigger], on_crashed=[mark_failed_trigger])
def train_flow(spec: TrainSpec, trigger: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train, evaluate and store one model version from raw tabular data."""
    logger = get_run_logger()
    if spec.tuning.trials:
        logger.warning("tuning.trials=%d asked, but tuning is not available yet: training with fixed parameters",
                       spec.tuning.trials)
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
    model = fit_part(spec, matrices, validated["task"], n_classes)  # here, or on spec.compute.train_pool
    stages["train"] = {"cached": model["cached"], "seconds": 0.0 if model["cached"] else model.get("seconds", 0.0)}
    evaluation = run_stage(stages, "evaluate", evaluate_task, matrices, model, validated["task"], n_classes)
    stored = store_task(spec, sources, snapshot, validated, parts, matrices, model, evaluation, stages)
    logger.info("model %s version %s at %s%s", spec.name, stored["version"], stored["uri"],
                " (identical to a stored version: reused)" if stored["reused"] else "")
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
        "fit_run": model.get("flow_run"),
        "trigger": trigger,
    }


if __name__ == "__main__":
    from trainpipe.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
