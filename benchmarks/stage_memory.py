"""Peak memory of each data stage, in memory against out of core: each stage's plain function in a process of its
own, its peak anonymous memory (RssAnon, sampled every 20 ms) reported per stage. (Not `wait4`'s peak RSS:
Linux carries the parent's peak into its children, and polars maps local Parquet files, which RSS counts.)

    .venv/bin/python benchmarks/stage_memory.py [--rows 2000000] [--work DIR] [--modes in_memory out_of_core]

Uses the scale benchmark's synthetic Parquet (30 columns). Stages: ingest, validate, split, features, drift (its
profile), train (out of core: 50 rounds over the partitions; in memory: 50 rounds on a QuantileDMatrix).
Prints JSON: {stage: {mode: {anon_mb, seconds}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("ingest", "validate", "split", "features", "drift", "train")


def _watch_anon(peak: list[int]) -> None:
    while True:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) // 1024)
        time.sleep(0.02)


def run_stage(stage: str, mode: str, work: Path, data: Path) -> dict[str, Any]:
    """One stage's plain function (in this process), reading what the previous stage wrote under `work/mode`."""
    import polars as pl

    from trainpipe import storage

    out = work / mode
    out.mkdir(parents=True, exist_ok=True)
    streaming = mode == "out_of_core"
    peak = [0]
    threading.Thread(target=_watch_anon, args=(peak,), daemon=True).start()
    started = time.perf_counter()
    if stage == "ingest":
        from tasks.ingest import ingest_files, ingest_files_streaming
        from trainpipe.sources import resolve_sources
        from trainpipe.spec import DataSpec

        spec = DataSpec(uris=[str(data)])
        (ingest_files_streaming if streaming else ingest_files)(resolve_sources(spec), spec, str(out / "snap.parquet"))
    elif stage == "validate":
        from tasks.validate import validate_snapshot, validate_snapshot_streaming
        from trainpipe.outofcore import sink_plan
        from trainpipe.spec import ValidationSpec

        check = validate_snapshot_streaming if streaming else validate_snapshot
        frame, contract, _ = check(str(out / "snap.parquet"), "fp", "y", None, [], [], None, ValidationSpec(),
                                        None)
        target = str(out / "validated.parquet")
        sink_plan(frame, target) if streaming else storage.write_parquet(frame, target)
        (out / "classes.json").write_text(json.dumps(contract["target"].get("classes")))
    elif stage == "split":
        from tasks.split import iter_stored_parts, split_streaming
        from trainpipe.outofcore import parquet_rows
        from trainpipe.spec import SplitSpec

        uri = str(out / "validated.parquet")
        if streaming:
            split_streaming(uri, parquet_rows(uri), str(out), SplitSpec(), "y", "binary", 0)
        else:
            for name, part in iter_stored_parts(uri, SplitSpec(), "y", "binary", 0):  # as the split stage does
                storage.write_parquet(part, str(out / f"{name}.parquet"))
                del part
    elif stage == "features":
        from tasks.features import apply_streaming, fit_transform, fit_transform_streaming
        from trainpipe.matrices import write_matrix
        from trainpipe.spec import FeatureSpec
        from trainpipe.transform import matrix_frame

        classes = json.loads((out / "classes.json").read_text())
        parts = {name: str(out / f"{name}.parquet") for name in ("train", "valid", "test")}
        if streaming:
            transform = fit_transform_streaming(parts["train"], "y", "binary", classes, [], FeatureSpec())
            for name, uri in parts.items():
                apply_streaming(uri, None, transform, str(out / "m" / name), 200_000)
        else:
            train = storage.read_parquet(parts["train"])
            transform = fit_transform(train, "y", "binary", classes, [], FeatureSpec())
            for name, uri in parts.items():
                frame = train if name == "train" else storage.read_parquet(uri)
                write_matrix(matrix_frame(frame, transform, uri), str(out / "m" / name), 200_000)
        storage.write_json(str(out / "m" / "transform.json"), transform)
    elif stage == "drift":
        from tasks.drift import PROFILE_ROWS, data_profile
        from trainpipe.outofcore import parquet_rows, sample_rows

        uri = str(out / "train.parquet")
        if streaming:
            rows = parquet_rows(uri)
            data_profile(sample_rows(uri, rows, PROFILE_ROWS), ["y"], rows)
        else:
            data_profile(storage.read_parquet(uri), ["y"])
    elif stage == "train":
        import xgboost as xgb

        from tasks.train import fit_external
        from trainpipe.boosting import booster_params
        from trainpipe.matrices import partition_uris
        from trainpipe.outofcore import partitioned_matrix
        from trainpipe.results import Matrices
        from trainpipe.spec import XGBoostSpec

        transform = storage.read_json(str(out / "m" / "transform.json"))
        spec = XGBoostSpec(num_boost_round=50, refit=False, learning_rate=0.3)
        params = booster_params(spec, "binary", 2, 0)
        if streaming:
            uris = {n: str(out / "m" / n) for n in ("train", "valid", "test")}
            matrices = Matrices(uris=uris, partitions={n: partition_uris(u) for n, u in uris.items()},
                                transform_uri="", features=transform["features"],
                                feature_types=transform["feature_types"], dropped=[], fingerprint="", stage_key="")
            fit_external(matrices, params, spec)
        else:
            types = transform["feature_types"]
            # as the train stage builds them: one partition at a time into an in-memory QuantileDMatrix
            dtrain = partitioned_matrix(partition_uris(str(out / "m" / "train")), types, params["max_bin"])
            dvalid = partitioned_matrix(partition_uris(str(out / "m" / "valid")), types, params["max_bin"], ref=dtrain)
            xgb.train(params, dtrain, 50, evals=[(dvalid, "valid")], early_stopping_rounds=10, verbose_eval=False)
    del pl
    return {"anon_mb": peak[0], "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--work", default="/tmp/trainpipe-stage-memory")
    parser.add_argument("--modes", nargs="+", default=["in_memory", "out_of_core"], choices=["in_memory", "out_of_core"])
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Path(args.work)
    if args.stage:  # the child: one stage
        from run import synthetic

        print(json.dumps(run_stage(args.stage, args.mode, work, synthetic(work, args.rows, "parquet"))))
        return 0
    from run import synthetic

    work.mkdir(parents=True, exist_ok=True)
    synthetic(work, args.rows, "parquet")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result: dict[str, Any] = {"rows": args.rows}
    for mode in args.modes:
        for stage in STAGES:
            child = subprocess.Popen([sys.executable, __file__, "--rows", str(args.rows), "--work", str(work),
                                      "--stage", stage, "--mode", mode], env=env, cwd=root,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, status, _ = os.wait4(child.pid, 0)
            text = child.stdout.read().decode()
            if os.waitstatus_to_exitcode(status):
                print(child.stderr.read().decode()[-2000:], file=sys.stderr)
                return 1
            numbers = json.loads(text.strip().splitlines()[-1])
            result.setdefault(stage, {})[mode] = numbers
            print(stage, mode, result[stage][mode], file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
