"""Native categorical splits against ordinal codes, on the matrices and parameters of a finished trainpipe run.

The train stage's cost on a dataset with low-cardinality text columns depends on how they reach XGBoost:
trainpipe passes them as categorical features (`feature_types` "c", partition splits); a hand-written script
usually passes ordinal codes as plain numbers. This script takes a run's cached features and train stages
from its artifact store and fits both ways, same rows, same parameters, same early stopping, each matrix
built after a warm-up, and prints rounds, time per round, fit time, the validation score and the holdout AUC
(binary) or the holdout metric of the objective.

    trainpipe train --data flights.csv --target late --artifacts /tmp/art
    .venv/bin/python benchmarks/categorical_encoding.py --artifacts /tmp/art
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, help="a local artifact store holding one finished run")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    args = parser.parse_args(argv)

    import xgboost as xgb

    from tasks.train import fit_booster
    from trainpipe.boosting import feature_array, training_matrix
    from trainpipe.matrices import read_matrix
    from trainpipe.metrics import compute_metrics
    from trainpipe.transform import LABEL

    features = sorted(glob.glob(f"{args.artifacts}/cache/features/*/_SUCCESS"))
    trains = sorted(glob.glob(f"{args.artifacts}/cache/train/*/_SUCCESS"))
    if not features or not trains:
        raise SystemExit(f"{args.artifacts}: no finished features and train stages under cache/")
    marker = json.loads(Path(features[-1]).read_text())
    params = json.loads(Path(trains[-1]).read_text())["params"]
    folder = Path(features[-1]).parent
    parts = {name: read_matrix(str(folder / name)) for name in ("train", "valid", "test")}
    native = marker["feature_types"]
    task = "binary" if params["objective"] == "binary:logistic" else (
        "regression" if params["objective"].startswith("reg:") else "multiclass")
    training_matrix(parts["valid"], native, params["max_bin"])  # warm-up: XGBoost's first matrix costs ~1 s more
    print(f"{parts['train'].height} training rows, {len(native)} features, {native.count('c')} categorical; "
          f"params {json.dumps({k: params[k] for k in ('learning_rate', 'max_depth', 'nthread')})}")
    for label, types in (("native categorical", native), ("ordinal codes", ["q"] * len(native))):
        started = time.perf_counter()
        dtrain = training_matrix(parts["train"], types, params["max_bin"])
        dvalid = training_matrix(parts["valid"], types, params["max_bin"], ref=dtrain)
        built = time.perf_counter()
        booster, info = fit_booster(dtrain, dvalid, params, args.rounds, args.patience)
        fitted = time.perf_counter()
        test = xgb.DMatrix(feature_array(parts["test"]), feature_names=[c for c in parts["test"].columns if c != LABEL],
                           feature_types=types, enable_categorical=True, missing=np.nan)
        pred = booster.predict(test, iteration_range=(0, info["best_iteration"] + 1))
        metrics = compute_metrics(task, parts["test"].get_column(LABEL).to_numpy(), pred)
        print(f"{label:20s} matrices {built - started:5.2f} s  fit {fitted - built:6.2f} s  "
              f"rounds {info['rounds_trained']:5d} (best {info['best_iteration']})  "
              f"{1000 * (fitted - built) / info['rounds_trained']:5.1f} ms/round  "
              f"valid {info['validation_metric']} {info['best_validation_score']:.5f}  holdout "
              + ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
