"""What the promotion gate, drift and card plots cost next to training itself.

    python benchmarks/gate_overhead.py [--rows 10000 100000] [--rounds 200] [--samples 1000]

For each size, on one generated binary dataset (80 % train, 20 % holdout), it measures in
the same run: xgboost.train with trainpipe's default parameters for a fixed number of
rounds; the paired bootstrap of the gate (champion and challenger on the holdout, AUC and
logloss); the drift profile and report of the training rows; the card's curve points. It
prints seconds and each one's ratio to the training time, and the time of one audited
publish + compare-and-swap promotion on a local store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_frame(rows: int, seed: int = 7):
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    logit = x[:, 0] - 0.5 * x[:, 1] + 0.8 * (region == "north") + 0.3 * np.sin(x[:, 2] * 2)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    return pl.DataFrame({f"x{i}": x[:, i] for i in range(8)}).with_columns(
        pl.Series("region", region), pl.Series("y", y))


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(rows: int, rounds: int, samples: int) -> dict[str, float]:
    import numpy as np
    import polars as pl
    import xgboost as xgb

    from tasks.drift import data_profile, drift_report
    from tasks.plots import plot_data
    from trainpipe.promotion import paired_bootstrap
    from trainpipe.spec import PromotionSpec

    frame = make_frame(rows)
    cut = int(rows * 0.8)
    train, test = frame[:cut], frame[cut:]

    def matrix(part: pl.DataFrame) -> xgb.DMatrix:
        numbers = part.with_columns(pl.col("region").cast(pl.Categorical).to_physical().cast(pl.Float64))
        return xgb.DMatrix(numbers.drop("y").to_numpy(), label=part.get_column("y").to_numpy())

    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "learning_rate": 0.1,
              "seed": 0, "nthread": 2}
    dtrain, dtest = matrix(train), matrix(test)
    train_s, challenger = timed(lambda: xgb.train(params, dtrain, rounds))
    champion = xgb.train({**params, "max_depth": 2}, dtrain, rounds // 4)
    labels = test.get_column("y").to_numpy()
    ours, theirs = challenger.predict(dtest), champion.predict(dtest)
    out = {"train": train_s}
    for metric, larger in (("auc", True), ("logloss", False)):
        out[f"gate_{metric}"], _ = timed(lambda m=metric, g=larger: paired_bootstrap(
            "binary", m, g, labels, ours, theirs, samples, 0.95, seed=0, max_rows=PromotionSpec().bootstrap_rows))
    out["drift"], _ = timed(lambda: drift_report(data_profile(train, ["y"]), train, ["y"]))
    out["plots"], _ = timed(lambda: plot_data("binary", labels, np.asarray(ours), ["0", "1"]))
    return out


def publish_cost(repeats: int = 20) -> float:
    from trainpipe import registry
    from trainpipe.promotion import promote_version
    from trainpipe.spec import PromotionSpec

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        for i in range(repeats):
            version, _ = registry.publish_version(root, "bench", {"model.ubj": b"x" * 100_000},
                                                  {"identity": {"i": i}, "prefect": {}})
            current = registry.champion(root, "bench")
            verdict = {"policy": "gate", "champion_version": current, "promote": True, "reason": "bench"}
            promote_version(root, "bench", version, verdict, PromotionSpec(), 0, lambda c: verdict, {})
        return (time.perf_counter() - started) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    print(f"{'rows':>8} {'train s':>8} {'gate auc s':>11} {'(ratio)':>8} {'gate logloss s':>15} {'(ratio)':>8} "
          f"{'drift s':>8} {'plots s':>8}")
    for rows in args.rows:
        r = measure(rows, args.rounds, args.samples)
        print(f"{rows:>8} {r['train']:>8.2f} {r['gate_auc']:>11.2f} {r['gate_auc'] / r['train']:>8.2f} "
              f"{r['gate_logloss']:>15.2f} {r['gate_logloss'] / r['train']:>8.2f} {r['drift']:>8.3f} "
              f"{r['plots']:>8.3f}")
    print(f"one publish (100 kB model) + audited compare-and-swap promotion, local store: "
          f"{publish_cost() * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
