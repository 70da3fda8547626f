"""trainpipe against plain XGBoost with default parameters, on real public tabular data.

    python benchmarks/compare_plain_xgboost.py [--artifacts DIR] [--with-workarounds] [--only NAME ...]

For each dataset the script

1. writes the data as a CSV file (as a user would hand it to trainpipe) under
   `<artifacts>/bench_data/`;
2. runs trainpipe's training flow from code (`train_flow(parse_spec(...))`) with the default
   spec (name, data, target and artifact root only);
3. finds the train / valid / test matrices that this very run's features stage wrote:
   the version's manifest.json records `identity.transform`, the content fingerprint of the
   features stage's output, and every features stage folder records that fingerprint in its
   `_SUCCESS` file, so the folder is identified by content, not guessed from file times.
   The folder's transform.json must also hash to the transform.json stored with the
   version (`manifest.files`), and its row counts must equal `manifest.data.rows`;
4. fits plain `xgboost.train(params, dtrain)`: only `objective` (the one trainpipe uses for
   the task, so both predict the same quantity) and `num_class` for multiclass; XGBoost's
   default 10 rounds, no early stopping, hence train and valid concatenated; the DMatrix is
   built with the same feature_types and enable_categorical=True as trainpipe's;
5. scores the stored trainpipe model (model.ubj of the version, hash-checked against the
   manifest) and the plain booster on the same test matrix with trainpipe's own
   `tasks.evaluate.compute_metrics`; the trainpipe number is also checked against the
   metric the manifest reports.

Exit status: 0 when trainpipe is no worse than plain XGBoost on the headline metric of every
dataset (within the tolerance), bit 1 set when it is worse on at least one dataset, bit 2
set when trainpipe (or the benchmark) failed on at least one dataset.

Datasets: scikit-learn's bundled breast_cancer, wine, iris, diabetes (needs scikit-learn,
a test extra of trainpipe); data/penguins.csv of this repository (sex with null targets,
species); Vega's seattle-weather and cars from the `vega_datasets` package, which ships the
files locally (pip install "vega_datasets==0.9.0"; it needs pandas). Datasets whose
package is missing are skipped with a note.

`--with-workarounds` changes the spec only where a trainpipe bug fixed in babf76e stops the default run
of an older commit (see WORKAROUNDS); such rows are marked with `*`. Without it the datasets run exactly with
trainpipe's defaults, and a failure is reported as ERROR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

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

from tasks.evaluate import METRICS, compute_metrics  # noqa: E402
from tasks.features import LABEL  # noqa: E402
from tasks.train import OBJECTIVES  # noqa: E402
from trainpipe import storage  # noqa: E402
from trainpipe.spec import parse_spec  # noqa: E402

# Spec changes that get past trainpipe bugs fixed in commit babf76e (only used with --with-workarounds,
# to benchmark older commits).
WORKAROUNDS: dict[str, dict[str, Any]] = {
    # An integer-coded class target makes the first run's own contract check fail
    # (tasks/validate.py build_schema: isin([0, 1]) on the column coerced to Float64).
    # Warn mode lets the run go on; the data is the same.
    "int_labels": {"validation": {"mode": "warn"}},
    # A Date column crashes the features stage: the default datetime_parts include "hour",
    # and polars rejects dt.hour() on a Date (tasks/features.py _feature_exprs).
    "date_column": {"features": {"datetime_parts": ["year", "month", "day", "weekday"]}},
}

HIGHER_IS_BETTER = {name: better for metrics in METRICS.values() for name, better in metrics.items()}


@dataclass
class Dataset:
    name: str
    target: str
    source: str
    writer: Callable[[Path], None]  # writes the CSV to the given path
    needs: str  # the package that provides the data, for the skip note
    workarounds: list[str] = field(default_factory=list)


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
    # Shipped as one JSON array, which trainpipe does not read (.json means NDJSON to it): as CSV.
    rows = json.loads(_vega_path("cars.json").read_text())
    pl.DataFrame(rows, infer_schema_length=None).write_csv(path)


DATASETS: list[Dataset] = [
    Dataset("breast_cancer", "target", "sklearn load_breast_cancer", _sklearn_writer("load_breast_cancer"),
            "scikit-learn", ["int_labels"]),
    Dataset("wine", "target", "sklearn load_wine", _sklearn_writer("load_wine"), "scikit-learn", ["int_labels"]),
    Dataset("iris", "target", "sklearn load_iris", _sklearn_writer("load_iris"), "scikit-learn", ["int_labels"]),
    Dataset("diabetes", "target", "sklearn load_diabetes", _sklearn_writer("load_diabetes"), "scikit-learn"),
    Dataset("penguins_sex", "sex", "data/penguins.csv", _copy_writer(REPO / "data" / "penguins.csv"), "-"),
    Dataset("penguins_species", "species", "data/penguins.csv", _copy_writer(REPO / "data" / "penguins.csv"), "-"),
    Dataset("seattle_weather", "weather", "vega_datasets seattle-weather.csv", _vega_seattle, "vega_datasets",
            ["date_column"]),
    Dataset("cars", "Miles_per_Gallon", "vega_datasets cars.json", _vega_cars, "vega_datasets", ["date_column"]),
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
    frames = {part: storage.read_parquet(uri) for part, uri in meta["uris"].items()}
    rows = {part: frame.height for part, frame in frames.items()}
    if rows != {part: manifest["data"]["rows"][part] for part in rows}:
        raise RuntimeError(f"matrix rows {rows} differ from the manifest's {manifest['data']['rows']}")
    return {"frames": frames, "feature_types": meta["feature_types"], "folder": meta["transform_uri"].rsplit("/", 1)[0]}


def dmatrix(frame: pl.DataFrame, feature_types: list[str]) -> xgb.DMatrix:
    """The matrix as trainpipe's train stage builds it: same names, types and categorical support."""
    features = frame.drop(LABEL)
    return xgb.DMatrix(
        features.to_numpy().astype(np.float32),
        label=frame.get_column(LABEL).to_numpy(),
        feature_names=features.columns,
        feature_types=feature_types,
        enable_categorical=True,
        missing=np.nan,
    )


# ---------------------------------------------------------------- one dataset


def run_dataset(dataset: Dataset, artifacts: str, data_dir: Path, use_workarounds: bool) -> dict[str, Any]:
    from flows.train import train_flow
    from tasks.predict import load_version

    csv = data_dir / f"{dataset.name}.csv"
    dataset.writer(csv)
    raw: dict[str, Any] = {"name": f"bench-{dataset.name}", "data": {"uris": [str(csv)]},
                           "target": dataset.target, "artifacts": artifacts}
    applied = dataset.workarounds if use_workarounds else []
    for key in applied:
        for section, values in WORKAROUNDS[key].items():
            raw[section] = {**raw.get(section, {}), **values}
    spec = parse_spec(raw, source=f"benchmark {dataset.name}")

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
    dtest = dmatrix(test, feature_types)
    tp_metrics = compute_metrics(task_type, labels, version["booster"].predict(dtest))
    headline = manifest["headline_metric"]
    if not np.isclose(tp_metrics[headline], manifest["metrics"][headline], rtol=1e-6, atol=1e-9):
        raise RuntimeError(f"re-scored trainpipe {headline} {tp_metrics[headline]} != manifest "
                           f"{manifest['metrics'][headline]}")

    # Plain XGBoost: defaults, only the objective (and num_class), on train + valid.
    objective = OBJECTIVES[task_type][0]
    params: dict[str, Any] = {"objective": objective}
    if task_type == "multiclass":
        params["num_class"] = len(manifest["classes"])
    started = time.perf_counter()
    dtrain = dmatrix(pl.concat([frames["train"], frames["valid"]]), feature_types)
    plain = xgb.train(params, dtrain)
    plain_wall = time.perf_counter() - started
    plain_metrics = compute_metrics(task_type, labels, plain.predict(dtest))

    stages = result["stages"]
    return {
        "dataset": dataset.name + ("*" if applied else ""),
        "workarounds": applied,
        "task": task_type,
        "rows": manifest["data"]["rows"],
        "dropped_null_target": manifest["data"]["dropped_null_target"],
        "metric": headline,
        "higher_is_better": HIGHER_IS_BETTER[headline],
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


def verdict(row: dict[str, Any], auc_tol: float, rel_tol: float) -> tuple[float, bool]:
    """(difference trainpipe - plain, whether trainpipe is no worse within tolerance)."""
    diff = row["trainpipe"] - row["plain"]
    if row["higher_is_better"]:
        # Bounded scores (auc): an absolute tolerance.
        return diff, diff >= -auc_tol
    # Losses and errors (logloss, mlogloss, rmse): relative to plain XGBoost's value.
    return diff, diff <= rel_tol * abs(row["plain"])


# ---------------------------------------------------------------- output


def print_table(rows: list[dict[str, Any]], auc_tol: float, rel_tol: float) -> None:
    header = ["dataset", "task", "rows (train/valid/test)", "metric", "trainpipe", "plain xgb", "difference",
              "verdict", "tp wall s", "tp train s", "xgb wall s"]
    body = []
    for row in rows:
        if "error" in row:
            body.append([row["dataset"], row.get("task", "?"), "-", "-", "-", "-", "-", "ERROR", "-", "-", "-"])
            continue
        diff, ok = verdict(row, auc_tol, rel_tol)
        arrow = "higher better" if row["higher_is_better"] else "lower better"
        rows_text = f"{sum(row['rows'].values())} ({row['rows']['train']}/{row['rows']['valid']}/{row['rows']['test']})"
        body.append([
            row["dataset"], row["task"], rows_text, f"{row['metric']} ({arrow})", f"{row['trainpipe']:.4f}",
            f"{row['plain']:.4f}", f"{diff:+.4f}", "no worse" if ok else "WORSE",
            f"{row['trainpipe_wall']:.2f}", f"{row['trainpipe_train_stage']:.2f}", f"{row['plain_wall']:.3f}",
        ])
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print("  ".join("-" * w for w in widths))
    for line in body:
        print(fmt.format(*line))


def print_details(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if "error" in row:
            continue
        tp = ", ".join(f"{k}={v:.4f}" for k, v in row["trainpipe_metrics"].items())
        plain = ", ".join(f"{k}={v:.4f}" for k, v in row["plain_metrics"].items())
        cached = f"; cached stages: {', '.join(row['cached'])}" if row["cached"] else ""
        print(f"  {row['dataset']}: trainpipe {tp} ({row['trainpipe_rounds']} rounds) | plain {plain} "
              f"({row['plain_rounds']} rounds) | {row['features']} features, {row['categorical']} categorical; "
              f"{row['dropped_null_target']} null-target rows dropped{cached}")


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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", help="artifact root (default: a new temporary folder, so nothing is cached)")
    parser.add_argument("--with-workarounds", action="store_true",
                        help="for commits before babf76e: change the spec where a since-fixed bug stops the default run (rows marked *)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these datasets")
    parser.add_argument("--auc-tol", type=float, default=0.005, help="allowed AUC shortfall (absolute), default 0.005")
    parser.add_argument("--rel-tol", type=float, default=0.02,
                        help="allowed excess of a loss or error over plain XGBoost's, relative, default 0.02")
    parser.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    args = parser.parse_args(argv)

    selected = [d for d in DATASETS if not args.only or d.name in args.only]
    unknown = set(args.only or []) - {d.name for d in DATASETS}
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(sorted(unknown))}; choose from {', '.join(d.name for d in DATASETS)}")

    artifacts = storage.normalize_root(args.artifacts or tempfile.mkdtemp(prefix="trainpipe-bench-"))
    data_dir = Path(artifacts) / "bench_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"artifacts: {artifacts}", flush=True)
    print(f"xgboost {xgb.__version__}, polars {pl.__version__}", flush=True)

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
            rows.append(run_dataset(dataset, artifacts, data_dir, args.with_workarounds))
        except Exception as error:  # noqa: BLE001 - one failing dataset must not hide the others
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            rows.append({"dataset": dataset.name, "error": f"{type(error).__name__}: {message}",
                         "where": failing_frame(error), "traceback": traceback.format_exc()})

    print()
    print_table(rows, args.auc_tol, args.rel_tol)
    print()
    print(f"tolerance: auc may be {args.auc_tol} lower; logloss/mlogloss/rmse may be {args.rel_tol:.0%} higher "
          "than plain XGBoost's")
    print("trainpipe: default spec, early stopping on valid (<=1000 rounds, eta 0.1); plain: xgboost.train defaults "
          "(10 rounds, eta 0.3) on train+valid; same matrices, same test part, tasks.evaluate.compute_metrics")
    print("tp wall s: the whole train_flow call (Prefect, ingest ... store); tp train s: its train stage; "
          "xgb wall s: DMatrix + xgboost.train")
    if any(row["dataset"].endswith("*") for row in rows if "error" not in row):
        print("* spec changed to get past a known trainpipe bug: " + "; ".join(
            f"{row['dataset']} {', '.join(json.dumps(WORKAROUNDS[w]) for w in row['workarounds'])}"
            for row in rows if "error" not in row and row["workarounds"]))
    print("details:")
    print_details(rows)
    for note in notes:
        print(note)
    for row in rows:
        if "error" in row:
            print(f"ERROR {row['dataset']}: {row['error']}")
            print(f"  at {row['where']}")

    if args.json:
        Path(args.json).write_text(json.dumps({"artifacts": artifacts, "rows": rows, "notes": notes}, indent=2,
                                              default=str))

    worse = [r["dataset"] for r in rows if "error" not in r and not verdict(r, args.auc_tol, args.rel_tol)[1]]
    failed = [r["dataset"] for r in rows if "error" in r]
    if worse:
        print(f"trainpipe is worse than plain XGBoost on: {', '.join(worse)}")
    if failed:
        print(f"trainpipe failed on: {', '.join(failed)}")
    return (1 if worse else 0) | (2 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
