"""trainpipe against plain XGBoost with default parameters, on real public tabular data.

    python benchmarks/compare_plain_xgboost.py [--seeds N] [--set KEY=VALUE ...] [--only NAME ...]
                                               [--artifacts DIR] [--json FILE]

For each dataset and each seed 0 .. N-1 (`--seeds N`, default 3) the script

1. writes the data as a CSV file (as a user would hand it to trainpipe) under
   `<artifacts>/bench_data/`;
2. runs trainpipe's training flow from code (`train_flow(parse_spec(...))`) with the default
   spec (name, data, target, artifact root and `seed` only) plus the `--set` overrides; the seed
   picks the split, so each seed gives other train / valid / test parts;
3. finds the train / valid / test matrices that this very run's features stage wrote:
   the version's manifest.json records `identity.transform`, the content fingerprint of the
   features stage's output, and every features stage folder records that fingerprint in its
   `_SUCCESS` file, so the folder is identified by content, not guessed from file times.
   The folder's transform.json must also hash to the transform.json stored with the
   version (`manifest.files`), and its row counts must equal `manifest.data.rows`;
4. fits plain `xgboost.train(params, dtrain)` on that run's matrices: only `objective` (the one
   trainpipe uses for the task, so both predict the same quantity) and `num_class` for
   multiclass; XGBoost's default 10 rounds, no early stopping, hence train and valid
   concatenated; the DMatrix is built with the same feature_types and enable_categorical=True
   as trainpipe's;
5. scores the stored trainpipe model (model.ubj of the version, hash-checked against the
   manifest) and the plain booster on the same test matrix with trainpipe's own
   `tasks.evaluate.compute_metrics`; the trainpipe number is also checked against the
   metric the manifest reports.

The verdict per dataset compares the mean of the headline metric over the seeds (trainpipe's
mean against plain XGBoost's mean on the same splits); the table also shows each side's
per-seed range (min..max) and on how many seeds trainpipe was the better of the two.
All runs of one invocation share one artifact root and one Prefect process (its ephemeral
API server starts once).

`--set KEY=VALUE` (repeatable) changes the spec of every run: KEY is a dotted spec path, VALUE
is parsed as YAML (so JSON works too), and the result is merged into the spec with
`trainpipe.spec.merge_dicts`, e.g. `--set xgboost.refit=false --set features.min_category_count=1`.
A later `--set` wins. YAML reads `on`/`off`/`yes`/`no` as booleans and an empty value as null:
quote such strings (`KEY='"off"'`). name, target, artifacts, seed and data.uris are the
benchmark's own and cannot be set; the merged spec is validated before any run starts.
Feature settings change the matrices that plain XGBoost is fitted on as well.

Exit status: 0 when trainpipe's mean is no worse than plain XGBoost's on the headline metric of
every dataset (within the tolerance), bit 1 set when it is worse on at least one dataset, bit 2
set when trainpipe (or the benchmark) failed on at least one dataset and seed; 2 as well for
bad command-line options (argparse).

Datasets: scikit-learn's bundled breast_cancer, wine, iris, diabetes (needs scikit-learn,
a test extra of trainpipe); data/penguins.csv of this repository (sex with null targets,
species); Vega's seattle-weather and cars from the `vega_datasets` package, which ships the
files locally (pip install "vega_datasets==0.9.0"; it needs pandas). Datasets whose
package is missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# Offline, quiet Prefect defaults, unless the caller set them (must precede importing prefect).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import xgboost as xgb  # noqa: E402
import yaml  # noqa: E402

from trainpipe import storage  # noqa: E402
from trainpipe.boosting import OBJECTIVES, load_matrix  # noqa: E402
from trainpipe.errors import SpecError  # noqa: E402
from trainpipe.matrices import read_matrix  # noqa: E402
from trainpipe.metrics import METRICS, compute_metrics  # noqa: E402
from trainpipe.spec import TrainSpec, merge_dicts, parse_spec  # noqa: E402
from trainpipe.transform import LABEL  # noqa: E402

HIGHER_IS_BETTER = {name: better for metrics in METRICS.values() for name, better in metrics.items()}

# Spec fields the benchmark sets for each run itself.
RESERVED = ("name", "target", "artifacts", "seed")


@dataclass
class Dataset:
    name: str
    target: str
    source: str
    writer: Callable[[Path], None]  # writes the CSV to the given path
    needs: str  # the package that provides the data, for the skip note


# ---------------------------------------------------------------- data sources


def _sklearn_writer(loader_name: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from sklearn import datasets

        bunch = getattr(datasets, loader_name)()
        frame = pl.DataFrame(bunch.data, schema=[str(n) for n in bunch.feature_names], orient="row")
        target = bunch.target
        # Keep the target exactly as scikit-learn gives it (integer classes, float for regression).
        frame = frame.with_columns(pl.Series("target", target))
        frame.write_csv(path)

    return write


def _copy_writer(source: Path) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(source.read_bytes())

    return write


def _vega_path(filename: str) -> Path:
    import vega_datasets

    return Path(vega_datasets.__file__).resolve().parent / "_data" / filename


def _vega_seattle(path: Path) -> None:
    # The shipped CSV as is (dates like 2012/01/01).
    path.write_bytes(_vega_path("seattle-weather.csv").read_bytes())


def _vega_cars(path: Path) -> None:
    # Shipped as one JSON array of records. Written as CSV like the other datasets: trainpipe's CSV
    # reader parses Year ("1970-01-01") as a date (year/month/... features), its JSON reader keeps it as text.
    rows = json.loads(_vega_path("cars.json").read_text())
    pl.DataFrame(rows, infer_schema_length=None).write_csv(path)


DATASETS: list[Dataset] = [
    Dataset("breast_cancer", "target", "sklearn load_breast_cancer", _sklearn_writer("load_breast_cancer"),
            "scikit-learn"),
    Dataset("wine", "target", "sklearn load_wine", _sklearn_writer("load_wine"), "scikit-learn"),
    Dataset("iris", "target", "sklearn load_iris", _sklearn_writer("load_iris"), "scikit-learn"),
    Dataset("diabetes", "target", "sklearn load_diabetes", _sklearn_writer("load_diabetes"), "scikit-learn"),
    Dataset("penguins_sex", "sex", "data/penguins.csv", _copy_writer(REPO / "data" / "penguins.csv"), "-"),
    Dataset("penguins_species", "species", "data/penguins.csv", _copy_writer(REPO / "data" / "penguins.csv"), "-"),
    Dataset("seattle_weather", "weather", "vega_datasets seattle-weather.csv", _vega_seattle, "vega_datasets"),
    Dataset("cars", "Miles_per_Gallon", "vega_datasets cars.json", _vega_cars, "vega_datasets"),
]


def available(dataset: Dataset) -> Optional[str]:
    """None when the dataset can be built, else why not."""
    module = {"scikit-learn": "sklearn", "vega_datasets": "vega_datasets"}.get(dataset.needs)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as error:
        hint = ' (pip install "vega_datasets==0.9.0")' if module == "vega_datasets" else ""
        return f"{dataset.needs} is not installed{hint}: {error}"
    return None


# ---------------------------------------------------------------- --set overrides


def parse_set(text: str) -> dict[str, Any]:
    """`a.b.c=VALUE` as the nested dict {"a": {"b": {"c": VALUE}}}, VALUE parsed as YAML."""
    key, sep, value_text = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(part.strip() for part in path):
        raise ValueError(f"--set {text!r}: expected KEY=VALUE with a dotted spec path as KEY, "
                         "e.g. xgboost.refit=false")
    try:
        value: Any = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        raise ValueError(f"--set {text!r}: the value is not valid YAML/JSON: {error}") from None
    for part in reversed(path):
        value = {part.strip(): value}
    return value


def build_overrides(items: list[str]) -> dict[str, Any]:
    """All `--set` items merged in order (a later one wins), checked against the spec's schema."""
    overrides: dict[str, Any] = {}
    for item in items:
        overrides = merge_dicts(overrides, parse_set(item))
    reserved = [key for key in RESERVED if key in overrides]
    data = overrides.get("data")
    if data is not None and (not isinstance(data, dict) or "uris" in data):
        reserved.append("data.uris")
    if reserved:
        raise ValueError(f"--set cannot change {', '.join(reserved)}: the benchmark sets them for each run "
                         "(use --seeds for seeds, --artifacts for the artifact root)")
    # Fail now, not after the first runs: the same merge as each run's, on a stand-in dataset.
    try:
        parse_spec(merge_dicts(base_spec("check", "data.csv", "y", "artifacts", 0), overrides), source="from --set")
    except SpecError as error:
        raise ValueError(str(error)) from None
    return overrides


def base_spec(name: str, csv: str, target: str, artifacts: str, seed: int) -> dict[str, Any]:
    return {"name": f"bench-{name}", "data": {"uris": [csv]}, "target": target, "artifacts": artifacts, "seed": seed}


# ---------------------------------------------------------------- locating trainpipe's matrices


def find_feature_matrices(artifacts: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The features stage output of the run that produced `manifest`, found by content fingerprint."""
    wanted = manifest["identity"]["transform"]
    root = storage.join(artifacts, "cache", "features")
    matches = []
    for key in storage.list_dir(root):
        marker = storage.join(root, key, "_SUCCESS")
        if storage.exists(marker):
            meta = storage.read_json(marker)
            if meta.get("fingerprint") == wanted:
                matches.append(meta)
    if not matches:
        raise RuntimeError(f"no features stage folder under {root} has fingerprint {wanted}")
    meta = matches[0]  # equal fingerprints mean equal matrix and transform bytes
    transform_hash = storage.sha256_bytes(storage.read_bytes(meta["transform_uri"]))
    if transform_hash != manifest["files"]["transform.json"]:
        raise RuntimeError(f"{meta['transform_uri']} does not hash to the version's transform.json")
    frames = {part: read_matrix(uri) for part, uri in meta["uris"].items()}
    rows = {part: frame.height for part, frame in frames.items()}
    if rows != {part: manifest["data"]["rows"][part] for part in rows}:
        raise RuntimeError(f"matrix rows {rows} differ from the manifest's {manifest['data']['rows']}")
    return {"frames": frames, "feature_types": meta["feature_types"], "folder": meta["transform_uri"].rsplit("/", 1)[0]}


# ---------------------------------------------------------------- one dataset, one seed


def run_once(dataset: Dataset, csv: Path, artifacts: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    from flows.train import train_flow
    from trainpipe.scoring import load_version

    raw = merge_dicts(base_spec(dataset.name, str(csv), dataset.target, artifacts, seed), overrides)
    spec = parse_spec(raw, source=f"benchmark {dataset.name} seed {seed}")

    started = time.perf_counter()
    result = train_flow(spec)
    tp_wall = time.perf_counter() - started

    # trainpipe's model: the stored version, hash-checked against its manifest.
    version = load_version(artifacts, f"{result['model']}:{result['version']}")
    manifest = version["manifest"]
    task_type = manifest["task"]
    matrices = find_feature_matrices(artifacts, manifest)
    frames, feature_types = matrices["frames"], matrices["feature_types"]
    test = frames["test"]
    labels = test.get_column(LABEL).to_numpy()
    dtest = load_matrix(test, feature_types)
    tp_metrics = compute_metrics(task_type, labels, version["booster"].predict(dtest))
    headline = manifest["headline_metric"]
    if not np.isclose(tp_metrics[headline], manifest["metrics"][headline], rtol=1e-6, atol=1e-9):
        raise RuntimeError(f"re-scored trainpipe {headline} {tp_metrics[headline]} != manifest "
                           f"{manifest['metrics'][headline]}")

    # Plain XGBoost: defaults, only the objective (and num_class), on train + valid of the same split.
    objective = OBJECTIVES[task_type][0]
    params: dict[str, Any] = {"objective": objective}
    if task_type == "multiclass":
        params["num_class"] = len(manifest["classes"])
    started = time.perf_counter()
    dtrain = load_matrix(pl.concat([frames["train"], frames["valid"]]), feature_types)
    plain = xgb.train(params, dtrain)
    plain_wall = time.perf_counter() - started
    plain_metrics = compute_metrics(task_type, labels, plain.predict(dtest))

    stages = result["stages"]
    return {
        "seed": seed,
        "task": task_type,
        "rows": manifest["data"]["rows"],
        "dropped_null_target": manifest["data"]["dropped_null_target"],
        "metric": headline,
        "trainpipe": tp_metrics[headline],
        "plain": plain_metrics[headline],
        "trainpipe_metrics": tp_metrics,
        "plain_metrics": plain_metrics,
        "trainpipe_rounds": manifest["training"]["best_iteration"] + 1,
        "plain_rounds": plain.num_boosted_rounds(),
        "trainpipe_wall": tp_wall,
        "trainpipe_train_stage": stages.get("train", {}).get("seconds", 0.0),
        "cached": [name for name, stage in stages.items() if stage.get("cached")],
        "plain_wall": plain_wall,
        "features": len(feature_types),
        "categorical": feature_types.count("c"),
        "matrices": matrices["folder"],
        "version": f"{result['model']}:{result['version']}",
    }


def run_dataset(dataset: Dataset, artifacts: str, data_dir: Path, overrides: dict[str, Any],
                seeds: list[int]) -> dict[str, Any]:
    """All seeds of one dataset, summarised; an "error" entry when any seed failed."""
    csv = data_dir / f"{dataset.name}.csv"
    dataset.writer(csv)
    runs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for seed in seeds:
        print(f"  seed {seed} ...", flush=True)
        try:
            runs.append(run_once(dataset, csv, artifacts, overrides, seed))
        except Exception as error:  # noqa: BLE001 - one failing run must not hide the others
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            errors.append({"seed": seed, "error": f"{type(error).__name__}: {message}",
                           "where": failing_frame(error), "traceback": traceback.format_exc()})
    row: dict[str, Any] = {"dataset": dataset.name, "runs": runs}
    if errors:
        row["error"] = "; ".join(f"seed {e['seed']}: {e['error']}" for e in errors)
        row["errors"] = errors
        if runs:
            row["task"] = runs[0]["task"]
        return row
    metrics = {run["metric"] for run in runs}
    if len(metrics) != 1:
        raise RuntimeError(f"{dataset.name}: the headline metric differs between seeds: {sorted(metrics)}")
    tp = np.array([run["trainpipe"] for run in runs])
    plain = np.array([run["plain"] for run in runs])
    higher = HIGHER_IS_BETTER[runs[0]["metric"]]
    row.update({
        "task": runs[0]["task"],
        "metric": runs[0]["metric"],
        "higher_is_better": higher,
        "seeds": [run["seed"] for run in runs],
        "trainpipe": float(tp.mean()),
        "plain": float(plain.mean()),
        "trainpipe_range": [float(tp.min()), float(tp.max())],
        "plain_range": [float(plain.min()), float(plain.max())],
        "trainpipe_better_seeds": int(np.sum(tp > plain) if higher else np.sum(tp < plain)),
        "rows": sorted({json.dumps(run["rows"], sort_keys=True) for run in runs}),
        "trainpipe_wall": float(np.mean([run["trainpipe_wall"] for run in runs])),
        "trainpipe_train_stage": float(np.mean([run["trainpipe_train_stage"] for run in runs])),
        "plain_wall": float(np.mean([run["plain_wall"] for run in runs])),
    })
    return row


def verdict(row: dict[str, Any], auc_tol: float, rel_tol: float) -> tuple[float, bool]:
    """(difference of the means trainpipe - plain, whether trainpipe is no worse within tolerance)."""
    diff = row["trainpipe"] - row["plain"]
    if row["higher_is_better"]:
        # Bounded scores (auc): an absolute tolerance.
        return diff, diff >= -auc_tol
    # Losses and errors (logloss, mlogloss, rmse): relative to plain XGBoost's value.
    return diff, diff <= rel_tol * abs(row["plain"])


# ---------------------------------------------------------------- output


def _rows_text(row: dict[str, Any]) -> str:
    texts = []
    for encoded in row["rows"]:
        rows = json.loads(encoded)
        texts.append(f"{rows['train'] + rows['valid'] + rows['test']} ({rows['train']}/{rows['valid']}/{rows['test']})")
    return " | ".join(texts)


def print_table(rows: list[dict[str, Any]], auc_tol: float, rel_tol: float) -> None:
    header = ["dataset", "task", "rows (train/valid/test)", "metric", "trainpipe mean", "tp min..max",
              "plain mean", "plain min..max", "difference", "ratio", "tp better", "verdict",
              "tp wall s", "tp train s", "xgb wall s"]
    body = []
    for row in rows:
        if "error" in row:
            body.append([row["dataset"], row.get("task", "?")] + ["-"] * 9 + ["ERROR", "-", "-", "-"])
            continue
        diff, ok = verdict(row, auc_tol, rel_tol)
        arrow = "higher better" if row["higher_is_better"] else "lower better"
        ratio = f"{row['trainpipe'] / row['plain']:.3f}" if row["plain"] else "-"
        body.append([
            row["dataset"], row["task"], _rows_text(row), f"{row['metric']} ({arrow})",
            f"{row['trainpipe']:.4f}", "{:.4f}..{:.4f}".format(*row["trainpipe_range"]),
            f"{row['plain']:.4f}", "{:.4f}..{:.4f}".format(*row["plain_range"]),
            f"{diff:+.4f}", ratio, f"{row['trainpipe_better_seeds']}/{len(row['seeds'])}",
            "no worse" if ok else "WORSE",
            f"{row['trainpipe_wall']:.2f}", f"{row['trainpipe_train_stage']:.2f}", f"{row['plain_wall']:.3f}",
        ])
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print("  ".join("-" * w for w in widths))
    for line in body:
        print(fmt.format(*line).rstrip())


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _mean_metrics(runs: list[dict[str, Any]], side: str) -> dict[str, float]:
    names = runs[0][f"{side}_metrics"].keys()
    return {name: float(np.mean([run[f"{side}_metrics"][name] for run in runs])) for name in names}


def print_details(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        runs = row["runs"]
        if not runs:
            continue
        first = runs[0]
        cached = sorted({name for run in runs for name in run["cached"]})
        cached_text = f"; cached stages in some run: {', '.join(cached)}" if cached else ""
        print(f"  {row['dataset']}: {first['features']} features, {first['categorical']} categorical; "
              f"{first['dropped_null_target']} null-target rows dropped{cached_text}")
        print(f"    mean     trainpipe {_metrics_text(_mean_metrics(runs, 'trainpipe'))} | "
              f"plain {_metrics_text(_mean_metrics(runs, 'plain'))}")
        for run in runs:
            print(f"    seed {run['seed']:<3} trainpipe {_metrics_text(run['trainpipe_metrics'])} "
                  f"({run['trainpipe_rounds']} rounds) | plain {_metrics_text(run['plain_metrics'])} "
                  f"({run['plain_rounds']} rounds)")


def failing_frame(error: BaseException) -> str:
    """The innermost frame of the project's own code (not this script) in the error's traceback."""
    project = [frame for frame in traceback.extract_tb(error.__traceback__)
               if frame.filename.startswith(str(REPO)) and not frame.filename.startswith(str(REPO / "benchmarks"))]
    if not project:
        return "outside trainpipe's code"
    frame = project[-1]
    return f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno} in {frame.name}: {frame.line}"


def warm_up_prefect() -> None:
    """Start Prefect's ephemeral API server before timing, so the first dataset does not pay for it."""
    from prefect import flow

    @flow(name="trainpipe-benchmark-warm-up", persist_result=False)
    def _noop() -> None:
        return None

    _noop()


def describe_training(overrides: dict[str, Any]) -> str:
    """trainpipe's training settings as this invocation's spec has them."""
    spec: TrainSpec = parse_spec(merge_dicts(base_spec("check", "data.csv", "y", "artifacts", 0), overrides))
    x, f = spec.xgboost, spec.features
    refit = "then refit on train+valid with the chosen rounds" if x.refit else "no refit (model trained on train only)"
    return (f"early stopping on valid (<={x.num_boost_round} rounds, patience {x.early_stopping_rounds}, "
            f"eta {x.learning_rate}, max_depth {x.max_depth}), {refit}; features.min_category_count "
            f"{f.min_category_count}, max_categories {f.max_categories}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", help="artifact root shared by all runs (default: a new temporary folder, "
                        "so nothing is cached from earlier invocations)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these datasets")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="run each dataset with spec seeds 0..N-1 (different splits); the verdict uses the "
                             "mean over them (default 3)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="merge into every dataset's spec: dotted spec path = YAML/JSON value, e.g. "
                             "xgboost.refit=false (repeatable; a later one wins)")
    parser.add_argument("--auc-tol", type=float, default=0.005, help="allowed AUC shortfall (absolute), default 0.005")
    parser.add_argument("--rel-tol", type=float, default=0.02,
                        help="allowed excess of a loss or error over plain XGBoost's, relative, default 0.02")
    parser.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    args = parser.parse_args(argv)

    selected = [d for d in DATASETS if not args.only or d.name in args.only]
    unknown = set(args.only or []) - {d.name for d in DATASETS}
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(d.name for d in DATASETS)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        overrides = build_overrides(args.sets)
    except ValueError as error:
        parser.error(str(error))
    seeds = list(range(args.seeds))

    started = time.perf_counter()
    artifacts = storage.normalize_root(args.artifacts or tempfile.mkdtemp(prefix="trainpipe-bench-"))
    data_dir = Path(artifacts) / "bench_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"artifacts: {artifacts}", flush=True)
    print(f"xgboost {xgb.__version__}, polars {pl.__version__}", flush=True)
    print(f"seeds: {', '.join(map(str, seeds))}; spec overrides: {json.dumps(overrides) if overrides else 'none'}",
          flush=True)

    warm_up_prefect()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for dataset in selected:
        missing = available(dataset)
        if missing:
            notes.append(f"skipped {dataset.name}: {missing}")
            print(notes[-1], flush=True)
            continue
        print(f"running {dataset.name} ...", flush=True)
        try:
            rows.append(run_dataset(dataset, artifacts, data_dir, overrides, seeds))
        except Exception as error:  # noqa: BLE001 - one failing dataset must not hide the others
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            rows.append({"dataset": dataset.name, "runs": [], "error": f"{type(error).__name__}: {message}",
                         "errors": [{"seed": None, "error": f"{type(error).__name__}: {message}",
                                     "where": failing_frame(error), "traceback": traceback.format_exc()}]})
    wall = time.perf_counter() - started

    print()
    print_table(rows, args.auc_tol, args.rel_tol)
    print()
    print(f"verdict on the mean over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), each seed its own split, "
          f"plain XGBoost on the same split; tolerance: auc may be {args.auc_tol} lower, logloss/mlogloss/rmse "
          f"{args.rel_tol:.0%} higher than plain XGBoost's mean")
    print("difference: trainpipe mean - plain mean; ratio: trainpipe mean / plain mean; tp better: seeds on which "
          "trainpipe's metric beats plain's")
    print(f"trainpipe: {'default spec' if not overrides else 'default spec with ' + json.dumps(overrides)}: "
          f"{describe_training(overrides)}")
    print("plain: xgboost.train defaults (10 rounds, eta 0.3) on train+valid; same matrices, same test part, "
          "tasks.evaluate.compute_metrics")
    print("tp wall s: the whole train_flow call (Prefect, ingest ... store), mean per seed; tp train s: its train "
          "stage; xgb wall s: DMatrix + xgboost.train")
    print("details:")
    print_details(rows)
    for note in notes:
        print(note)
    for row in rows:
        for error in row.get("errors", []):
            seed = f" seed {error['seed']}" if error["seed"] is not None else ""
            print(f"ERROR {row['dataset']}{seed}: {error['error']}")
            print(f"  at {error['where']}")

    if args.json:
        Path(args.json).write_text(json.dumps({"artifacts": artifacts, "seeds": seeds, "overrides": overrides,
                                               "wall_seconds": wall, "rows": rows, "notes": notes},
                                              indent=2, default=str))

    worse = [r["dataset"] for r in rows if "error" not in r and not verdict(r, args.auc_tol, args.rel_tol)[1]]
    failed = [r["dataset"] for r in rows if "error" in r]
    if worse:
        print(f"trainpipe is worse than plain XGBoost on: {', '.join(worse)}")
    if failed:
        print(f"trainpipe failed on: {', '.join(failed)}")
    no_worse = len(rows) - len(worse) - len(failed)
    print(f"summary: trainpipe no worse than plain XGBoost on {no_worse} of {len(rows)} datasets "
          f"(mean over {len(seeds)} seeds; {len(worse)} worse, {len(failed)} failed, {len(notes)} skipped); "
          f"wall {wall:.1f} s")
    return (1 if worse else 0) | (2 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
