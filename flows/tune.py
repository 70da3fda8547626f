"""The tuning subflow: batches of Optuna trials, one task per trial, at most `parallelism` at once."""

from __future__ import annotations

from typing import Any, Optional

from prefect.task_runners import ThreadPoolTaskRunner

from flows.base import trainpipe_flow
from tasks.tune.run import finish_tuning_task, open_tuning_task
from tasks.tune.trial import trial_task
from trainpipe.results import Matrices, Tuned
from trainpipe.spec import TaskType, TrainSpec


@trainpipe_flow(name="trainpipe-tune", persist_result=True, result_serializer="json")
def tune_flow(spec: TrainSpec, matrices: Matrices, task_type: TaskType, n_classes: Optional[int]) -> Tuned:
    """Search XGBoost parameters on the stored train/valid matrices; returns the best parameters and a summary.

    Takes URIs and the spec only, so it can run as its own deployment. A finished tuning run
    with the same inputs is reused from the artifact store.
    """
    run = open_tuning_task(spec, matrices, task_type, n_classes)
    if run.done is not None:
        return run.done
    if spec.compute.engine == "dask":  # trials on the cluster's workers, the study and its loop here
        from tasks.tune.cluster import cluster_submitter
        from trainpipe.cluster import connect, scheduler_address

        client = connect(scheduler_address(spec.compute))
        try:
            outcome = run.search(cluster_submitter(client, run, matrices))
        finally:
            client.close(timeout=5)
        return finish_tuning_task(run, outcome)
    outcome = run.search(lambda trial, params, history: trial_task.submit(run.context, trial, trial.number,
                                                                         params, history))
    return finish_tuning_task(run, outcome)


def tuning_subflow(parallelism: int) -> Any:
    """tune_flow on a thread pool bounded by the number of trials run at once."""
    return tune_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=parallelism))
