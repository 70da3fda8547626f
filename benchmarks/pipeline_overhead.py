"""What trainpipe's pipeline costs over a hand-written polars + XGBoost script, at scale.

    python benchmarks/pipeline_overhead.py [--rows 1000000] [--rounds 200]

On one generated CSV (numeric, categorical, date and noise columns, a binary target with
nulls), it measures in the same run:
  1. a hand-written script: polars read_csv, drop null targets, a seeded split, category
     codes, xgboost.train with the same parameters and number of rounds, holdout AUC;
  2. trainpipe's train_flow, cold (empty artifact store), with per-stage seconds;
  3. train_flow again on the same spec and data (everything cached);
and prints wall times, the ratios cold/hand-written and cached/cold, and peak memory (RSS)
of each part (each runs in its own child process so the peaks do not mix).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(path: Path, rows: int, seed: int = 7) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    region = rng.choice(["north", "south", "east", "west", "centre"], size=rows, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    day = np.datetime64("2024-01-01") + rng.integers(0, 365, size=rows).astype("timedelta64[D]")
    logit = x[:, 0] - 0.5 * x[:, 1] + 0.8 * (region == "north") + 0.3 * np.sin(x[:, 2] * 2)
    target = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no").astype(object)
    target[rng.random(rows) < 0.01] = None
    frame = pl.DataFrame({f"x{i}": x[:, i] for i in range(6)}).with_columns(
        pl.Series("region", region), pl.Series("day", day), pl.Series("target", target, dtype=pl.String))
    frame.write_csv(path)


def hand_written(csv: str, rounds: int) -> dict:
    import numpy as np
    import polars as pl
    import xgboost as xgb

    from trainpipe.metrics import roc_auc

    started = time.perf_counter()
    frame = pl.read_csv(csv, try_parse_dates=True).filter(pl.col("target").is_not_null())
    frame = frame.with_columns(
        pl.col("region").cast(pl.Categorical).to_physical().cast(pl.Float64),
        pl.col("day").dt.month().alias("month"), pl.col("day").dt.weekday().alias("weekday"),
    ).drop("day")
    labels = (frame.get_column("target") == "yes").cast(pl.Float32).to_numpy()
    features = frame.drop("target")
    order = np.random.default_rng(0).permutation(frame.height)
    n_test = frame.height // 5
    test, train = order[:n_test], order[n_test:]
    matrix = features.to_numpy().astype(np.float32)
    dtrain = xgb.DMatrix(matrix[train], label=labels[train])
    booster = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "learning_rate": 0.1,
                         "max_depth": 6, "nthread": os.cpu_count()}, dtrain, num_boost_round=rounds)
    auc = roc_auc(labels[test], booster.predict(xgb.DMatrix(matrix[test])))
    return {"seconds": time.perf_counter() - started, "auc": auc}


def trainpipe_run(csv: str, artifacts: str, rounds: int) -> dict:
    from prefect.client.orchestration import get_client

    from flows.train import train_flow
    from trainpipe.spec import parse_spec

    started = time.perf_counter()
    with get_client(sync_client=True) as client:  # start the embedded Prefect server before timing
        client.hello()
    server_seconds = time.perf_counter() - started
    spec = parse_spec({"name": "overhead", "data": {"uris": [csv]}, "target": "target", "artifacts": artifacts,
                       "xgboost": {"num_boost_round": rounds, "early_stopping_rounds": rounds, "refit": False}})
    started = time.perf_counter()
    result = train_flow(spec)
    return {"seconds": time.perf_counter() - started, "auc": result["metrics"]["auc"], "stages": result["stages"],
            "server_seconds": server_seconds}


def child(part: str, csv: str, artifacts: str, rounds: int) -> None:
    """Run one part and print its result and peak RSS as JSON."""
    result = hand_written(csv, rounds) if part == "hand" else trainpipe_run(csv, artifacts, rounds)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(part: str, csv: str, artifacts: str, rounds: int) -> dict:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, __file__, "--child", part, "--csv", csv, "--artifacts", artifacts,
                           "--rounds", str(rounds)], capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"{part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--child", choices=["hand", "trainpipe"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.csv, args.artifacts, args.rounds)
        return

    work = Path(tempfile.mkdtemp(prefix="trainpipe-overhead-"))
    csv, artifacts = str(work / "data.csv"), str(work / "artifacts")
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    make_data(Path(csv), args.rows)
    size_mib = Path(csv).stat().st_size / 2**20
    hand = run_child("hand", csv, artifacts, args.rounds)
    cold = run_child("trainpipe", csv, artifacts, args.rounds)
    warm = run_child("trainpipe", csv, artifacts, args.rounds)

    print(f"data: {args.rows} rows, {size_mib:.0f} MiB CSV; {args.rounds} boosting rounds; {os.cpu_count()} cores")
    print(f"{'run':<28}{'wall s':>9}{'peak RSS MiB':>14}{'holdout AUC':>13}")
    runs = (("hand-written polars+xgboost", hand), ("trainpipe cold", cold), ("trainpipe cached rerun", warm))
    for label, part in runs:
        print(f"{label:<28}{part['seconds']:>9.2f}{part['peak_rss_mib']:>14.0f}{part['auc']:>13.4f}")
    print("trainpipe cold stages: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in cold["stages"].items()))
    print(f"ratio trainpipe cold / hand-written wall: {cold['seconds'] / hand['seconds']:.2f}")
    print(f"ratio trainpipe cold / hand-written peak RSS: {cold['peak_rss_mib'] / hand['peak_rss_mib']:.2f}")
    print(f"ratio cached rerun / cold wall: {warm['seconds'] / cold['seconds']:.2f}")
    print(f"embedded Prefect server start (not in the wall times above): {cold['server_seconds']:.1f}s")


if __name__ == "__main__":
    main()
