"""Training time and tuning trials per minute: local engine vs a Dask cluster of 1, 2, ... CLI workers.

    PYTHONPATH=$PWD python benchmarks/dask_engine.py --rows 200000 --workers 1 2 [--external-memory] [--json FILE]

Each cluster is started from the command line (`dask scheduler`, N x `dask worker --nthreads T
--memory-limit M`) as in tests/integration/dask_cli.py, on the same generated data as the local fit,
all in one run; the ratios are against the local engine measured in that run. On a machine with few
cores the ratios show the engine's overhead, not a speed-up. `--external-memory` also times the out-of-core
fits: the local one (ExtMemQuantileDMatrix over the partitions) and the cluster's (one per worker in
XGBoost's collective), each against the in-memory fit of the same engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    parser.add_argument("--memory-limit", default="2GB", help="per Dask worker (dask worker --memory-limit)")
    parser.add_argument("--external-memory", action="store_true", help="also time the out-of-core fits")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    from distributed import Client

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tasks.train import fit_booster
    from tasks.tune.cluster import cluster_trial
    from tasks.tune.data import MatrixPool
    from tasks.tune.trial import fit_trial
    from tests.integration.dask_cli import cli_cluster
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
    if args.external_memory:
        from trainpipe.outofcore import cache_folder, external_matrix

        started = time.perf_counter()
        with cache_folder() as cache:
            et, _ = external_matrix(partitions["train"], types, params["max_bin"], os.path.join(cache, "train"))
            ev, _ = external_matrix(partitions["valid"], types, params["max_bin"], os.path.join(cache, "valid"),
                                    ref=et)
            fit_booster(et, ev, params, rounds, early)
            del et, ev
        results["local"]["extmem_train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    pool = MatrixPool(matrices)
    for p in trial_params:
        with pool.pair() as (dt, dv):
            fit_trial(dt, dv, p, rounds, early, lambda s, v: None)
    results["local"]["trials_per_min"] = len(trial_params) / (time.perf_counter() - started) * 60

    for n in args.workers:
        with cli_cluster(n, args.memory_limit, nthreads=args.threads, folder=root / f"cluster-{n}") as cluster, \
                Client(cluster.address) as client:
            started = time.perf_counter()
            _, info = fit_on_cluster(cluster.address, partitions, types, params, rounds, early, refit=False)
            train_s = time.perf_counter() - started
            extmem: dict = {}
            if args.external_memory:
                started = time.perf_counter()
                _, ext = fit_on_cluster(cluster.address, partitions, types, params, rounds, early, refit=False,
                                        external_memory="on")
                extmem = {"extmem_train_s": time.perf_counter() - started,
                          "extmem_peak_rss_mb": max(w["peak_rss"] for w in ext["external_memory"]["per_worker"].values())
                          / 1e6}
            started = time.perf_counter()
            futures = [client.submit(cluster_trial, matrices.model_dump(mode="json"), None, 1, i, p, rounds, early,
                                     str(root / f"trials-{n}" / f"{i}.json"), pure=False)
                       for i, p in enumerate(trial_params)]
            records = client.gather(futures)
            results[f"dask-{n}"] = {"train_s": train_s,
                                    "trials_per_min": len(trial_params) / (time.perf_counter() - started) * 60,
                                    "trial_workers": len({r["worker"] for r in records}),
                                    "partitions_on": len(set(info["engine"]["placement"]["train"])), **extmem}
    base = results["local"]
    for r in results.values():
        r["train_ratio"] = r["train_s"] / base["train_s"]
        r["trials_ratio"] = r["trials_per_min"] / base["trials_per_min"]
    setup = {"rows": args.rows, "partition_rows": args.partition_rows, "threads_per_worker": args.threads,
             "trials": len(trial_params), "cores": os.cpu_count(), "memory_limit": args.memory_limit,
             "external_memory": args.external_memory}
    print(" ".join(f"{k}={v}" for k, v in setup.items()))
    for name, r in results.items():
        print(f"{name:8s} train {r['train_s']:7.2f} s (x{r['train_ratio']:.2f} of local)   "
              f"trials/min {r['trials_per_min']:7.1f} (x{r['trials_ratio']:.2f})")
        if "extmem_train_s" in r:
            print(f"{'':8s} out of core: train {r['extmem_train_s']:7.2f} s (x{r['extmem_train_s'] / r['train_s']:.2f} "
                  f"of in memory)" + (f", peak worker RSS {r['extmem_peak_rss_mb']:.0f} MB"
                                      if "extmem_peak_rss_mb" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "results": results}, indent=2))


if __name__ == "__main__":
    main()
