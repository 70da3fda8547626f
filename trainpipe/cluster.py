"""Training one booster over a Dask cluster on a matrix's Parquet partitions: in memory (xgboost.dask) or, for
data larger than the workers' memory, out of core (one ExtMemQuantileDMatrix per worker in XGBoost's collective).

trainpipe never starts a cluster: the scheduler address comes from the spec (`compute.dask_address`) or the
worker's `TRAINPIPE_DASK_ADDRESS` (a pool's job variables). XGBoost's collective waits forever on a lost
worker, so a fit runs under a watch: when a worker present at the start leaves, the fit is abandoned after a
bounded grace, retried once on the remaining workers, and then fails naming the scheduler and the lost worker.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Optional

from trainpipe import storage
from trainpipe.errors import SpecError, TrainpipeError
from trainpipe.spec import ComputeSpec
from trainpipe.transform import LABEL

if TYPE_CHECKING:
    import dask.dataframe as dd
    import xgboost as xgb
    from distributed import Client

ADDRESS_ENV = "TRAINPIPE_DASK_ADDRESS"
# Seconds a fit may go on after a worker it started with has left (XGBoost's collective would wait forever).
LOST_WORKER_GRACE_S = 10.0
# Seconds XGBoost's collective operations and tracker wait for a peer.
COLLECTIVE_TIMEOUT_S = 60
# auto (compute.external_memory): out of core when a worker's memory now plus this many times its share of the
# float32 train+valid matrix exceeds WORKER_MEMORY_FRACTION of its --memory-limit. Measured in memory:
# ~257 MB worker baseline + 3.6 x its share (tests/integration/test_dask.py); 0.7 is where dask starts spilling.
IN_MEMORY_FACTOR = 3.6
WORKER_MEMORY_FRACTION = 0.7
# Seconds the out-of-core path's tracker waits for every worker to join the collective (and to leave it). Each
# task joins before it reads any data, so all join within moments on idle workers; a worker lost before it
# joined holds the others for this long (XGBoost cannot be told to give up sooner), then the retry starts.
BOOTSTRAP_TIMEOUT_S = 30


class WorkerLost(TrainpipeError):
    """A Dask worker left the cluster during a fit."""

    def __init__(self, address: str, lost: list[str]) -> None:
        super().__init__(f"Dask worker(s) {', '.join(lost)} left the cluster at {address} during a fit")
        self.lost = lost


def scheduler_address(compute: ComputeSpec) -> str:
    """The Dask scheduler for engine dask: the spec's, else the worker's environment; never a new cluster."""
    address = compute.dask_address or os.environ.get(ADDRESS_ENV, "").strip()
    if not address:
        raise SpecError(f"compute.engine is 'dask' but no scheduler address: set compute.dask_address or "
                        f"{ADDRESS_ENV} on the worker (the dask pool's job variables); trainpipe never starts a cluster")
    return address


def connect(address: str, timeout_s: float = 30) -> Client:
    """A client of the running scheduler at `address`, with a clear error when none answers."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s)  # default: xgboost.dask looks the client up itself
    except (OSError, TimeoutError) as error:
        raise TrainpipeError(f"no Dask scheduler answered at {address} within {timeout_s:.0f} s: {error}") from None


def dask_frame(uris: list[str]) -> dd.DataFrame:
    """One matrix part as a Dask frame, one partition per Parquet partition (every worker reads the same URIs)."""
    import dask.dataframe as dd

    return dd.read_parquet(uris, storage_options=storage.storage_options(uris[0]) or None)


def pinned(client: Client, uris: list[str], workers: list[str]) -> tuple[dd.DataFrame, dd.Series, list[str]]:
    """Features and label of a part's Parquet partitions, partition i held by `workers[i * len(workers) // n]`.

    Contiguous blocks of partitions in the given (sorted) worker order, so that the same partitions and
    workers give the same placement on every run: where the scheduler would put them differs from run to run,
    and each worker's share of rows changes XGBoost's distributed sketch (and so the booster bytes).
    Keys are new on every call: a retry after a lost worker must not reuse a task pinned to that worker.
    Returns (features, label, the worker(s) holding each partition as the scheduler reports it).
    """
    import dask.dataframe as dd
    from distributed import wait

    attempt = uuid.uuid4().hex[:12]
    options = storage.storage_options(uris[0]) or None
    owners = [workers[i * len(workers) // len(uris)] for i in range(len(uris))]
    held = []
    for index, (uri, owner) in enumerate(zip(uris, owners)):  # read on its worker, split there
        pin = {"workers": [owner], "allow_other_workers": False}
        whole = client.submit(_read_partition, uri, options, key=f"trainpipe-read-{attempt}-{index}", **pin)
        held.append((client.submit(_features_of, whole, key=f"trainpipe-features-{attempt}-{index}", **pin),
                     client.submit(_label_of, whole, key=f"trainpipe-label-{attempt}-{index}", **pin)))
        if index == 0:
            meta = client.submit(_head, whole, key=f"trainpipe-meta-{attempt}", **pin).result()
        del whole  # released once both halves exist: a worker holds its share once
    wait([f for pair in held for f in pair])
    # Where the features of each partition are, as the scheduler reports it (not merely where they were asked).
    who = client.who_has([f for f, _ in held])
    observed = [",".join(sorted(who.get(f.key, ()))) for f, _ in held]
    return (dd.from_delayed([f for f, _ in held], meta=_features_of(meta), verify_meta=False),
            dd.from_delayed([lab for _, lab in held], meta=_label_of(meta), verify_meta=False), observed)


def _read_partition(uri: str, options: Optional[dict[str, Any]]) -> Any:
    import pandas as pd

    frame = pd.read_parquet(uri, storage_options=options)
    return frame.astype({c: "float32" for c in frame.columns if c != LABEL})


def _head(part: Any) -> Any:
    return part.iloc[:0]


def _features_of(part: Any) -> Any:
    return part.drop(columns=[LABEL])


def _label_of(part: Any) -> Any:
    return part[LABEL]


def quantile_matrix(client: Client, uris: list[str], feature_types: list[str], max_bin: int,
                    ref: Optional[xgb.dask.DaskQuantileDMatrix] = None,
                    workers: Optional[list[str]] = None) -> tuple[xgb.dask.DaskQuantileDMatrix, list[str]]:
    """A DaskQuantileDMatrix of a features-stage part's partitions (float32 features, the label, the transform's types) on
    partitions pinned to `workers` (default: the cluster's, sorted); also returns each partition's worker."""
    import numpy as np
    import xgboost as xgb
    import xgboost.dask  # a submodule: `import xgboost` alone does not load it

    # Pinned futures, not a plain persist: the scheduler's placement varies run to run, and dask's optimizer
    # could otherwise fuse the label-only reads into fewer partitions than the features', which xgboost.dask
    # refuses. A worker holds its share of the matrix once (features and label, not the whole frame as well).
    features, label, owners = pinned(client, uris, workers or sorted(workers_of(client)))
    matrix = xgb.dask.DaskQuantileDMatrix(client, features, label, feature_types=feature_types,
                                          enable_categorical=True, missing=np.nan, max_bin=max_bin, ref=ref)
    return matrix, owners


def layout(engine: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Where a dask fit's partitions were, independent of the workers' addresses: the number of workers and,
    per part, each partition's worker as an index in sorted worker order (None when not recorded)."""
    workers, placement = engine.get("workers") or [], engine.get("placement")
    if not placement:
        return None
    return {"workers": len(workers),
            **{part: [workers.index(w) if w in workers else -1 for w in held] for part, held in placement.items()}}


def workers_of(client: Client) -> set[str]:
    return set(client.scheduler_info(n_workers=-1)["workers"])


def watched_train(client: Client, address: str, run: Any, grace_s: float) -> Any:
    """Run `run()` in a daemon thread; raise WorkerLost once a starting worker has been gone for `grace_s`."""
    start_workers = workers_of(client)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as error:  # handed to the watching thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="xgboost-dask-train")
    thread.start()
    lost_since: Optional[float] = None
    lost: list[str] = []
    while thread.is_alive():
        thread.join(0.5)
        if not thread.is_alive():
            break
        gone = sorted(start_workers - workers_of(client))
        if gone and lost_since is None:
            lost_since, lost = time.monotonic(), gone
        if lost_since is not None and time.monotonic() - lost_since > grace_s:
            raise WorkerLost(address, lost)
    if "error" in outcome:
        gone = sorted(start_workers - workers_of(client))
        if gone:
            raise WorkerLost(address, gone) from outcome["error"]
        raise outcome["error"]
    return outcome["value"]


def cluster_external_memory(mode: str, out_of_core: bool, rows: int, features: int,
                            workers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether a cluster fit goes out of core: `on`/`off` as the spec says, on when the run's data stages went out
    of core, and under `auto` when the worker with the least room (`workers`: the scheduler's worker info) has
    no room for its share in memory (IN_MEMORY_FACTOR x its share above its memory now)."""
    from trainpipe.outofcore import matrix_bytes

    if mode in ("on", "off"):
        return {"on": mode == "on", "reason": f"compute.external_memory: {mode}"}
    if out_of_core:
        return {"on": True, "reason": "auto: the data stages went out of core"}
    limits = {a: w["memory_limit"] for a, w in workers.items() if w.get("memory_limit")}
    if not workers or len(limits) < len(workers):
        return {"on": False, "reason": "auto: a worker without a memory limit (or none): in memory"}
    share = matrix_bytes(rows, features) / len(workers)
    need = {a: (w.get("metrics") or {}).get("memory", 0) + IN_MEMORY_FACTOR * share for a, w in workers.items()}
    tight = min(limits, key=lambda a: WORKER_MEMORY_FRACTION * limits[a] - need[a])
    room = WORKER_MEMORY_FRACTION * limits[tight]
    on = need[tight] > room
    return {"on": on, "reason": f"auto: {need[tight] / 1e6:.0f} MB needed in memory on {tight} "
                                f"{'>' if on else '<='} {WORKER_MEMORY_FRACTION} x its limit ({room / 1e6:.0f} MB)"}


def _early_stopped(out: dict[str, Any], params: dict[str, Any]) -> tuple[xgb.Booster, dict[str, Any]]:
    """A cluster fit's booster cut at its best iteration, and what early stopping saw."""
    booster: xgb.Booster = out["booster"]
    best = getattr(booster, "best_iteration", None)
    rounds = booster.num_boosted_rounds()
    if best is not None and best + 1 < rounds:
        booster = booster[: best + 1]
    curve = out["history"]["valid"][params["eval_metric"]]
    return booster, {
        "rounds_trained": rounds,
        "best_iteration": int(best) if best is not None else rounds - 1,
        "best_validation_score": float(min(curve) if params["eval_metric"] != "auc" else max(curve)),
        "validation_metric": params["eval_metric"],
    }


def fit_on_cluster(
    address: str,
    partitions: dict[str, list[str]],
    feature_types: list[str],
    params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
    refit: bool,
    grace_s: float = LOST_WORKER_GRACE_S,
    external_memory: str = "off",
    out_of_core: bool = False,
    rows: int = 0,
) -> tuple[xgb.Booster, dict[str, Any]]:
    """Early-stopped training on the train/valid partitions (and a refit when asked), retried once after a lost
    worker: xgboost.dask.train in memory, or out of core per `cluster_external_memory` (`rows`: train + valid)."""
    client = connect(address)
    try:
        choice = cluster_external_memory(external_memory, out_of_core, rows, len(feature_types),
                                         client.scheduler_info(n_workers=-1)["workers"])
        fit = _fit_external if choice["on"] else _fit

        def attempt() -> tuple[xgb.Booster, dict[str, Any]]:
            booster, info = fit(client, address, partitions, feature_types, params, num_boost_round,
                                early_stopping_rounds, refit, grace_s)
            info["engine"]["external_memory"] = choice
            return booster, info

        try:
            return attempt()
        except WorkerLost as first:
            if not workers_of(client):
                raise TrainpipeError(f"{first}; no workers left to retry on") from None
            try:
                return attempt()
            except WorkerLost as second:
                raise TrainpipeError(f"training on the Dask cluster at {address} failed twice: first {first}; "
                                     f"then, on the remaining workers, {second}") from None
    finally:
        client.close(timeout=5)


def _fit(client: Client, address: str, partitions: dict[str, list[str]], feature_types: list[str],
         params: dict[str, Any], num_boost_round: int, early_stopping_rounds: int, refit: bool,
         grace_s: float) -> tuple[xgb.Booster, dict[str, Any]]:
    import xgboost as xgb
    import xgboost.dask
    from xgboost.collective import Config

    coll = Config(timeout=COLLECTIVE_TIMEOUT_S, tracker_timeout=COLLECTIVE_TIMEOUT_S)
    # Each worker uses its own threads: the fit process's cpu count says nothing about the cluster's.
    cluster_params = {k: v for k, v in params.items() if k != "nthread"}
    train, valid = partitions["train"], partitions["valid"]

    workers = sorted(workers_of(client))
    placement: dict[str, list[str]] = {}

    def early_stopped() -> dict[str, Any]:
        dtrain, placement["train"] = quantile_matrix(client, train, feature_types, params["max_bin"],
                                                     workers=workers)
        dvalid, placement["valid"] = quantile_matrix(client, valid, feature_types, params["max_bin"], ref=dtrain,
                                                     workers=workers)
        return xgb.dask.train(client, cluster_params, dtrain, num_boost_round=num_boost_round,
                              evals=[(dvalid, "valid")], early_stopping_rounds=early_stopping_rounds,
                              verbose_eval=False, coll_cfg=coll)

    out = watched_train(client, address, early_stopped, grace_s)
    booster, info = _early_stopped(out, params)
    info = {
        **info,
        "engine": {"name": "dask", "scheduler": address, "workers": workers,
                   # the worker(s) holding partition i of each part, as the scheduler reported (who_has)
                   "placement": placement},
    }
    if refit:
        both = train + valid

        def refitted() -> dict[str, Any]:
            stacked, _ = quantile_matrix(client, both, feature_types, params["max_bin"], workers=workers)
            return xgb.dask.train(client, cluster_params, stacked, num_boost_round=info["best_iteration"] + 1,
                                  verbose_eval=False, coll_cfg=coll)

        booster = watched_train(client, address, refitted, grace_s)["booster"]
    return booster, info


# --- out of core: XGBoost's collective over one ExtMemQuantileDMatrix per worker ---------------------------


def blocks(uris: list[str], n: int) -> list[list[str]]:
    """`uris` cut into `n` contiguous blocks, block k for the k-th worker in sorted order (as `pinned` places)."""
    return [[u for i, u in enumerate(uris) if i * n // len(uris) == k] for k in range(n)]


def _fit_external(client: Client, address: str, partitions: dict[str, list[str]], feature_types: list[str],
                  params: dict[str, Any], num_boost_round: int, early_stopping_rounds: int, refit: bool,
                  grace_s: float) -> tuple[xgb.Booster, dict[str, Any]]:
    """XGBoost's distributed external memory with Dask as the executor: a tracker on the scheduler, one task
    pinned to each worker that streams ITS contiguous block of partitions into an ExtMemQuantileDMatrix (pages
    in the worker's local TRAINPIPE_EXTMEM_DIR) and runs xgboost.train in the collective; rank 0's booster."""
    train, valid = partitions["train"], partitions["valid"]
    # every worker needs a partition of each part: an empty external-memory matrix has no batch to describe it
    workers = sorted(workers_of(client))[: min(len(workers_of(client)), len(train), len(valid))]
    out = watched_train(client, address, lambda: _collective_run(
        client, workers, {"train": blocks(train, len(workers)), "valid": blocks(valid, len(workers))},
        feature_types, params, num_boost_round, early_stopping_rounds), grace_s)
    booster, info = _early_stopped(out, params)
    info = {
        **info,
        # placement: the worker that read partition i of each part (reported by the worker's own iterator)
        "engine": {"name": "dask", "scheduler": address, "workers": workers, "placement": out["placement"]},
        "external_memory": {"train_partitions": len(train), "valid_partitions": len(valid),
                            "partitions_read": out["batches"], "cache_bytes": out["cache_bytes"],
                            "per_worker": out["per_worker"]},
    }
    if refit:
        both = train + valid
        refitted = watched_train(client, address, lambda: _collective_run(
            client, workers, {"train": blocks(both, len(workers))}, feature_types, params,
            info["best_iteration"] + 1, None), grace_s)
        booster = refitted["booster"]
    return booster, info


def _collective_run(client: Client, workers: list[str], blocks_of: dict[str, list[list[str]]],
                    feature_types: list[str], params: dict[str, Any], num_boost_round: int,
                    early_stopping_rounds: Optional[int]) -> dict[str, Any]:
    """One collective fit: start a tracker for len(workers) ranks, run a task on each worker, gather."""
    from distributed import wait
    from distributed.comm import get_address_host
    from xgboost.collective import Config
    from xgboost.dask import _start_tracker  # the scheduler needs only xgboost, as for xgboost.dask.train

    coll = Config(timeout=COLLECTIVE_TIMEOUT_S, tracker_timeout=BOOTSTRAP_TIMEOUT_S)
    # The tracker runs on the scheduler, which every worker reaches (xgboost.dask does the same).
    args = client.run_on_scheduler(_start_tracker, len(workers), get_address_host(client.scheduler.address),
                                   None, coll.tracker_timeout)
    args = coll.get_comm_config(args)
    cluster_params = {k: v for k, v in params.items() if k != "nthread"}
    attempt = uuid.uuid4().hex[:12]
    futures = [client.submit(_train_on_worker, {**args, "DMLC_TASK_ID": f"trainpipe-{rank:05d}"},
                             {part: b[rank] for part, b in blocks_of.items()}, feature_types, cluster_params,
                             num_boost_round, early_stopping_rounds, key=f"trainpipe-extmem-{attempt}-{rank}",
                             workers=[worker], allow_other_workers=False, pure=False)
               for rank, worker in enumerate(workers)]
    wait(futures)
    results = client.gather(futures)
    by_rank = sorted(results, key=lambda r: r["rank"])
    if [r["rank"] for r in by_rank] != list(range(len(workers))):
        raise TrainpipeError(f"collective ranks {[r['rank'] for r in results]} for workers {workers}")
    placement: dict[str, list[str]] = {}
    for part, b in blocks_of.items():
        flat = [u for block in b for u in block]
        placement[part] = [next((r["worker"] for r in results if u in r["read"].get(part, [])), "") for u in flat]
    return {"booster": by_rank[0]["booster"], "history": by_rank[0]["history"], "placement": placement,
            "batches": sum(r["batches"] for r in results), "cache_bytes": sum(r["cache_bytes"] for r in results),
            "per_worker": {r["worker"]: {"rank": r["rank"], "read": r["read"], "peak_rss": r["peak_rss"],
                                         "cache_bytes": r["cache_bytes"]} for r in results}}


def _train_on_worker(coll_args: dict[str, Any], parts: dict[str, list[str]], feature_types: list[str],
                     params: dict[str, Any], num_boost_round: int,
                     early_stopping_rounds: Optional[int]) -> dict[str, Any]:
    """On one worker, inside the collective: its own ExtMemQuantileDMatrix (validation sharing its bins), then
    xgboost.train; the booster comes back from rank 0 only. Runs as a Dask task (imports trainpipe there)."""
    import os
    import resource

    import xgboost as xgb
    from distributed import get_worker
    from xgboost import collective

    from trainpipe.outofcore import cache_bytes, cache_folder, external_matrix

    worker = get_worker()
    local = {**params, "nthread": worker.state.nthreads}
    on_host = params.get("device") == "cuda"  # as on one machine: a GPU caches pages in host memory
    history: dict[str, Any] = {}
    iters: dict[str, Any] = {}
    with cache_folder() as cache, collective.CommunicatorContext(**coll_args):
        rank = collective.get_rank()
        dtrain, iters["train"] = external_matrix(parts["train"], feature_types, params["max_bin"],
                                                 os.path.join(cache, "train"), on_host=on_host)
        evals, dvalid = [], None
        if "valid" in parts:
            dvalid, iters["valid"] = external_matrix(parts["valid"], feature_types, params["max_bin"],
                                                     os.path.join(cache, "valid"), ref=dtrain, on_host=on_host)
            evals = [(dvalid, "valid")]
        booster = xgb.train(local, dtrain, num_boost_round=num_boost_round, evals=evals or None,
                            early_stopping_rounds=early_stopping_rounds, evals_result=history, verbose_eval=False)
        cached = cache_bytes(cache)
        del dtrain, evals, dvalid  # before the cache folder goes: XGBoost removes its pages itself
    return {"rank": rank, "worker": worker.address, "booster": booster if rank == 0 else None, "history": history,
            "read": {part: list(it.read) for part, it in iters.items()},
            "batches": sum(it.batches for it in iters.values()), "cache_bytes": cached,
            # the worker process's peak resident memory so far (Linux: kB)
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
