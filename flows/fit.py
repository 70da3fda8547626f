"""Fitting: tuning and training on the feature matrices, in the calling flow run or on the pool the spec names.

`train_flow` calls `fit_part`: with no `compute.train_pool` tuning and training run as tasks of the
calling flow run; otherwise the fit flow is dispatched with `run_deployment` to `trainpipe-fit/fit-<pool>`, the
inputs and the result travelling as URIs and JSON through the shared artifact store.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.runtime import deployment, flow_run

from flows.base import trainpipe_flow
from tasks.common import run_stage
from tasks.compute import worker_slot, worker_xgboost
from tasks.train import train_task
from trainpipe import storage
from trainpipe.boosting import sized_defaults
from trainpipe.errors import SpecError, TrainpipeError
from trainpipe.results import Fit, Matrices, Validated
from trainpipe.spec import TaskType, TrainSpec

FIT_FLOW = "trainpipe-fit"


def fit_deployment(pool: str) -> str:
    return f"{FIT_FLOW}/fit-{pool}"


def result_uri(artifacts: str, run_id: str) -> str:
    """Where a fit run leaves its result for the flow that dispatched it."""
    return storage.join(artifacts, "runs", "fit", f"{run_id}.json")


def fit_matrices(spec: TrainSpec, matrices: Matrices, task_type: TaskType, n_classes: int) -> Fit:
    """Tune (when the spec asks for trials), then train, in the calling flow run."""
    artifacts = storage.normalize_root(spec.artifacts)
    if spec.compute.engine == "dask":  # fail before any work when no scheduler is named
        from trainpipe.cluster import scheduler_address

        scheduler_address(spec.compute)
    xgboost = sized_defaults(worker_xgboost(spec.xgboost), matrices.rows.get("train", 0), len(matrices.features))
    with worker_slot(get_run_logger()) as slot:
        stages: dict[str, Any] = {}
        tuned, refit = None, xgboost
        if spec.tuning.trials:  # Optuna and the tuning modules load only for a run that tunes
            from flows.tune import tuning_subflow
            from tasks.tune.run import tuned_xgboost

            tuned = run_stage(stages, "tune", tuning_subflow(spec.tuning.parallelism),
                              spec.model_copy(update={"xgboost": xgboost}), matrices, task_type, n_classes or None)
            refit = tuned_xgboost(xgboost, tuned)
        model = run_stage(stages, "train", train_task, matrices, task_type, n_classes or None, refit, spec.seed,
                          artifacts, tuned, spec.compute if spec.compute.engine == "dask" else None,
                          spec.compute.external_memory)
    return Fit(model=model, stages=stages, device=xgboost.device, concurrency=slot)


@trainpipe_flow(name=FIT_FLOW, persist_result=True, result_serializer="json")
def fit_flow(spec: TrainSpec, matrices: Matrices, task_type: TaskType, n_classes: int) -> Fit:
    """Tune (when the spec asks for trials), then train on the feature matrices; returns the model with both
    stages' timings and cache hits. Deployed per training pool; `fit_part` dispatches to it.

    Args:
        spec: The training run's spec (its artifact store must be shared with the caller).
        matrices: The features stage's result: URIs of the train/valid/test matrices and their metadata.
        task_type: binary, multiclass or regression.
        n_classes: Number of classes (0 for regression).
    """
    fit = fit_matrices(spec, matrices, task_type, n_classes)
    if deployment.id:  # dispatched: the caller reads the result from the shared store
        storage.write_json(result_uri(storage.normalize_root(spec.artifacts), flow_run.id), fit.model_dump(mode="json"))
    return fit


def fit_part(spec: TrainSpec, matrices: Matrices, validated: Validated) -> Fit:
    """Tune and train here, or run the fit flow on `spec.compute.train_pool` and wait for it."""
    pool = spec.compute.train_pool
    if not pool:  # in this flow run: a subflow would cost a flow run's start and heartbeat (about 2-3 s)
        return fit_matrices(spec, matrices, validated.task_type, validated.n_classes)
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    name = fit_deployment(pool)
    artifacts = storage.normalize_root(spec.artifacts)  # the pool's workers must share this store
    shared = spec.model_copy(update={"artifacts": artifacts})
    job_variables = {"env": dict(spec.compute.env)} if spec.compute.env else None
    try:
        run = run_deployment(name, parameters={"spec": shared.model_dump(mode="json"),
                                               "matrices": matrices.model_dump(mode="json"),
                                               "task_type": validated.task_type, "n_classes": validated.n_classes},
                             job_variables=job_variables, poll_interval=1)
    except ObjectNotFound:
        raise SpecError(f"compute.train_pool is {pool!r} but there is no deployment {name}: "
                        "run `prefect --no-prompt deploy --all` with this repository's prefect.yaml") from None
    get_run_logger().info("training ran on pool %s as flow run %s: %s", run.work_pool_name, run.id, run.state_name)
    if run.state is None or not run.state.is_completed():
        raise TrainpipeError(f"training on pool {pool!r} ({name}, flow run {run.id}) ended "
                             f"{run.state_name}: {run.state.message if run.state else 'no state'}")
    fit = Fit.model_validate(storage.read_json(result_uri(artifacts, str(run.id))))
    return fit.model_copy(update={"flow_run": {"id": str(run.id), "work_pool": run.work_pool_name}})
