"""The script a user would write instead of trainpipe: the baseline of `benchmarks/run.py`.

    python benchmarks/bare_script.py --data FILE --target COLUMN [--trials N] [--seed 0]

The same work as a trainpipe run with the default spec, by hand: read the file with polars
(CSV or Parquet), drop rows with a null target, check the columns (types, null counts), a seeded
random train / validation / test split (65 / 15 / 20 %), features (text categories as codes of the
training levels, date parts), one `xgboost.train` with XGBoost's default parameters and early
stopping on the validation part (the same rounds and patience as trainpipe's defaults), holdout
metrics. With `--trials N`: a plain sequential Optuna loop (TPE, seeded) over `xgboost.train` on
trainpipe's default search space, full training rows, no pruning, then the holdout of the best
trial's booster. Prints one JSON object: wall seconds of each step, the holdout metric, rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

ROUNDS, PATIENCE = 1000, 50  # trainpipe's xgboost.num_boost_round and early_stopping_rounds defaults
SPACE = {  # trainpipe's default search space (tasks/tune/space.py), written out as a user would
    "learning_rate": (0.01, 0.3, True), "max_depth": (2, 10, False), "min_child_weight": (0.1, 20.0, True),
    "subsample": (0.5, 1.0, False), "colsample_bytree": (0.5, 1.0, False), "reg_lambda": (1e-3, 10.0, True),
    "reg_alpha": (1e-3, 10.0, True),
}


def read(path: str) -> pl.DataFrame:
    if path.endswith(".parquet"):
        return pl.read_parquet(path)
    return pl.read_csv(path, try_parse_dates=True, infer_schema_length=10_000)


def features(train: pl.DataFrame, parts: list[pl.DataFrame], target: str) -> list[np.ndarray]:
    exprs = []
    for name, dtype in train.schema.items():
        if name == target:
            continue
        if dtype == pl.String:
            levels = train.get_column(name).drop_nulls().unique().sort().to_list()
            if len(levels) > 0.5 * train.height:  # an identifier: no feature
                continue
            exprs.append(pl.col(name).replace_strict(levels, list(range(len(levels))), default=None,
                                                     return_dtype=pl.Float32))
        elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
            exprs += [pl.col(name).dt.year().cast(pl.Float32).alias(f"{name}_y"),
                      pl.col(name).dt.month().cast(pl.Float32).alias(f"{name}_m"),
                      pl.col(name).dt.weekday().cast(pl.Float32).alias(f"{name}_wd")]
        elif dtype.is_numeric() or dtype == pl.Boolean:
            exprs.append(pl.col(name).cast(pl.Float32))
    return [part.select(exprs).to_numpy() for part in parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--trials", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import xgboost as xgb

    steps: dict[str, float] = {}
    t = time.perf_counter()
    frame = read(args.data).filter(pl.col(args.target).is_not_null())
    steps["read"] = time.perf_counter() - t
    t = time.perf_counter()
    nulls = frame.null_count().row(0, named=True)
    if frame.height == 0 or any(v == frame.height for v in nulls.values()):
        raise SystemExit(f"{args.data}: an empty column or no rows")
    y_raw = frame.get_column(args.target)
    regression = y_raw.dtype.is_float() or (y_raw.dtype.is_numeric() and y_raw.n_unique() > 20)
    classes = None if regression else y_raw.unique().sort().to_list()
    steps["check"] = time.perf_counter() - t
    t = time.perf_counter()
    order = np.random.default_rng(args.seed).permutation(frame.height)
    n_test, n_valid = int(0.2 * frame.height), int(0.15 * frame.height)
    cut = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid], "train": order[n_test + n_valid:]}
    parts = {k: frame[v] for k, v in cut.items()}
    steps["split"] = time.perf_counter() - t
    t = time.perf_counter()
    x_train, x_valid, x_test = features(parts["train"], [parts["train"], parts["valid"], parts["test"]], args.target)

    def label(part: pl.DataFrame) -> np.ndarray:
        y = part.get_column(args.target)
        if regression:
            return y.cast(pl.Float32).to_numpy()
        return y.replace_strict(classes, list(range(len(classes))), return_dtype=pl.Float32).to_numpy()

    y_train, y_valid, y_test = label(parts["train"]), label(parts["valid"]), label(parts["test"])
    steps["features"] = time.perf_counter() - t
    if regression:
        params = {"objective": "reg:squarederror", "eval_metric": "rmse"}
    elif len(classes) == 2:
        params = {"objective": "binary:logistic", "eval_metric": "logloss"}
    else:
        params = {"objective": "multi:softprob", "eval_metric": "mlogloss", "num_class": len(classes)}
    t = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(x_train, y_train)
    dvalid = xgb.QuantileDMatrix(x_valid, y_valid, ref=dtrain)
    if args.trials:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        boosters: dict[int, xgb.Booster] = {}

        def objective(trial: optuna.Trial) -> float:
            tried = dict(params)
            for name, (low, high, log) in SPACE.items():
                suggest = trial.suggest_int if name == "max_depth" else trial.suggest_float
                tried[name] = suggest(name, low, high, log=log)
            booster = xgb.train({**tried, "seed": args.seed}, dtrain, ROUNDS, evals=[(dvalid, "valid")],
                                early_stopping_rounds=PATIENCE, verbose_eval=False)
            boosters[trial.number] = booster
            return float(booster.best_score)

        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed))
        study.optimize(objective, n_trials=args.trials)
        booster = boosters[study.best_trial.number]
    else:
        booster = xgb.train({**params, "seed": args.seed}, dtrain, ROUNDS, evals=[(dvalid, "valid")],
                            early_stopping_rounds=PATIENCE, verbose_eval=False)
    steps["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = booster.predict(xgb.DMatrix(x_test), iteration_range=(0, booster.best_iteration + 1))
    if regression:
        metric, value = "rmse", float(np.sqrt(np.mean((pred - y_test) ** 2)))
    elif len(classes) == 2:
        from trainpipe.metrics import roc_auc  # the same AUC code on both sides

        metric, value = "auc", float(roc_auc(y_test, pred))
    else:
        metric, value = "accuracy", float(np.mean(pred.argmax(axis=1) == y_test))
    steps["metrics"] = time.perf_counter() - t
    print(json.dumps({"metric": metric, "value": value, "rows": frame.height, "features": x_train.shape[1],
                      "best_iteration": booster.best_iteration, "steps": steps,
                      "in_process_s": time.perf_counter() - STARTED}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
