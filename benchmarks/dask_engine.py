"""Training time and tuning trials per minute: local engine vs a Dask LocalCluster of 1, 2, ... workers.

    PYTHONPATH=$PWD python benchmarks/dask_engine.py --rows 200000 --workers 1 2

On a machine with few cores the ratios show the engine's overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def generated(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype(np.float32)
    signal = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.7, size=rows)
    return pl.DataFrame({f"x{i}": x[:, i] for i in range(8)}).with_columns(
        pl.Series("__label__", (signal > 0.3).astype(np.float64)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--partition-rows", type=int, default=50_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per Dask worker (and for the local fit)")
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from tasks.train import fit_booster
    from tasks.tune.cluster import cluster_trial
    from tasks.tune.data import MatrixPool
    from tasks.tune.trial import fit_trial
    from trainpipe.boosting import booster_params, training_matrix
    from trainpipe.cluster import fit_on_cluster
    from trainpipe.matrices import read_matrix, write_matrix
    from trainpipe.results import Matrices
    from trainpipe.spec import XGBoostSpec

    root = Path(tempfile.mkdtemp(prefix="dask-bench-"))
    frame = generated(args.rows)
    cut = int(args.rows * 0.8)
    parts = {"train": frame[:cut], "valid": frame[cut:]}
    partitions = {n: write_matrix(f, str(root / n), args.partition_rows)[0] for n, f in parts.items()}
    types = ["q"] * 8
    params = booster_params(XGBoostSpec(nthread=args.threads, learning_rate=0.1), "binary", None, seed=1)
    rounds, early = 200, 20
    matrices = Matrices(uris={n: str(root / n) for n in parts}, partitions=partitions, transform_uri="-",
                        features=[f"x{i}" for i in range(8)], feature_types=types, dropped=[], fingerprint="f",
                        stage_key="k")
    trial_params = [{**params, "max_depth": d} for d in (3, 4, 5, 6, 7, 8, 9, 10)][: args.trials]

    started = time.perf_counter()
    train, valid = (read_matrix(str(root / n)) for n in ("train", "valid"))
    dtrain = training_matrix(train, types, params["max_bin"])
    fit_booster(dtrain, training_matrix(valid, types, params["max_bin"], ref=dtrain), params, rounds, early)
    results = {"local": {"train_s": time.perf_counter() - started}}
    started = time.perf_counter()
    pool = MatrixPool(matrices)
    for p in trial_params:
        with pool.pair() as (dt, dv):
            fit_trial(dt, dv, p, rounds, early, lambda s, v: None)
    results["local"]["trials_per_min"] = len(trial_params) / (time.perf_counter() - started) * 60

    for n in args.workers:
        with LocalCluster(n_workers=n, threads_per_worker=args.threads, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster, Client(cluster) as client:
            started = time.perf_counter()
            fit_on_cluster(cluster.scheduler_address, partitions, types, params, rounds, early, refit=False)
            train_s = time.perf_counter() - started
            started = time.perf_counter()
            futures = [client.submit(cluster_trial, matrices.model_dump(mode="json"), None, 1, i, p, rounds, early,
                                     str(root / f"trials-{n}" / f"{i}.json"), pure=False)
                       for i, p in enumerate(trial_params)]
            client.gather(futures)
            results[f"dask-{n}"] = {"train_s": train_s,
                                    "trials_per_min": len(trial_params) / (time.perf_counter() - started) * 60}
    base = results["local"]
    print(f"rows={args.rows} partition_rows={args.partition_rows} threads/worker={args.threads} "
          f"trials={len(trial_params)}")
    for name, r in results.items():
        print(f"{name:8s} train {r['train_s']:7.2f} s (x{r['train_s'] / base['train_s']:.2f} of local)   "
              f"trials/min {r['trials_per_min']:7.1f} (x{r['trials_per_min'] / base['trials_per_min']:.2f})")


if __name__ == "__main__":
    main()
