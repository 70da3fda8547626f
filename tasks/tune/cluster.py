"""Tuning trials on a Dask cluster (compute.engine dask): one single-node fit per trial on a worker.

The search loop (batched ask/tell in trial order) stays in the tuning flow, so a seed and a parallelism
give the same trials as on one machine. A trial runs as a plain function on a worker: it reads the
matrices from the shared store (kept per worker process), fits with early stopping and records its result
at `<tune folder>/trials/<number>.json` before returning it. Dask re-runs a task whose worker died, and a
re-run of a finished trial returns what it recorded instead of fitting again. Trials on the cluster are not
pruned between rounds (the pruner lives with the study, in the flow's process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

from trainpipe import storage
from trainpipe.results import Matrices

_POOLS: dict[tuple[Any, ...], Any] = {}  # per worker process: matrices already read, by URIs and sampling


def trial_record_uri(folder: str, number: int) -> str:
    return storage.join(folder, "trials", f"{number}.json")


def cluster_trial(matrices: dict[str, Any], trial_rows: Optional[int], seed: int, number: int,
                  params: dict[str, Any], num_boost_round: int, early_stopping_rounds: int,
                  record_uri: str) -> dict[str, Any]:
    """Run (or, when already recorded, return) one trial on this Dask worker."""
    if storage.exists(record_uri):
        return {**storage.read_json(record_uri), "reused": True}
    import xgboost as xgb
    from distributed import get_worker

    from tasks.tune.data import MatrixPool
    from tasks.tune.trial import fit_trial

    started = time.perf_counter()
    key = (tuple(sorted(matrices["uris"].items())), trial_rows, seed)
    if key not in _POOLS:
        _POOLS[key] = MatrixPool(Matrices.model_validate(matrices), trial_rows, seed)
    worker = get_worker()
    record: dict[str, Any] = {"number": number, "params": params, "worker": worker.address}
    try:
        with _POOLS[key].pair() as (dtrain, dvalid):
            fitted = fit_trial(dtrain, dvalid, {**params, "nthread": worker.state.nthreads}, num_boost_round,
                               early_stopping_rounds, lambda step, value: None)
    except xgb.core.XGBoostError as error:
        record.update(state="FAIL", value=None, error=str(error).strip().splitlines()[0][:500])
    else:
        record.update(state="COMPLETE", value=fitted["value"], best_iteration=fitted["best_iteration"],
                      rounds=fitted["rounds"], timed_out=False)
    record["seconds"] = round(time.perf_counter() - started, 3)
    storage.write_json(record_uri, record)  # atomic: a re-run sees all of it or nothing
    return record


def cluster_submitter(client: Any, run: Any, matrices: Matrices) -> Callable[..., Any]:
    """`submit(trial, params, history)` for `TuningRun.search` that runs each trial on the cluster."""
    context, tuning = run.context, run.tuning
    payload = matrices.model_dump(mode="json")

    def submit(trial: Any, params: dict[str, Any], history: Any) -> Any:
        return client.submit(cluster_trial, payload, tuning.trial_rows, run.seed, trial.number,
                             {**context.base_params, **params}, context.num_boost_round,
                             context.early_stopping_rounds, trial_record_uri(run.folder, trial.number),
                             key=f"trial-{run.study_name}-{trial.number}", pure=False, retries=1)

    return submit
