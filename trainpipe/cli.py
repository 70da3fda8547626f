"""The `trainpipe` command: train, predict, models list/show, infra setup, notify.

Exit codes: 0 success, 1 unexpected failure, 2 bad spec or option, 3 unreadable or
unsuitable data, 4 data-contract violation, 5 missing model or version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

from trainpipe.errors import SpecError, TrainpipeError


class _QuietExpectedErrors(logging.Filter):
    """Drop Prefect's tracebacks for errors trainpipe explains itself (bad spec, data, contract)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrainpipeError):
            record.exc_info, record.exc_text = None, None
        return True


class _ExpectedErrorLines(logging.Filter):
    """Keeps Prefect's console free of the error lines for a failure the CLI itself explains last."""

    names = tuple(cls.__name__ for cls in TrainpipeError.__subclasses__())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message for name in self.names)


def _prepare_prefect() -> None:
    """Offline-friendly defaults for an embedded (ephemeral) Prefect run, unless already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The embedded server can need more than Prefect's 20 s default to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    quiet = _QuietExpectedErrors()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(quiet)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.data:
        out["data"] = {"uris": args.data}
    for field in ("target", "task", "name", "artifacts", "seed"):
        if getattr(args, field) is not None:
            out[field] = getattr(args, field)
    if args.trials is not None:
        out["tuning"] = {"trials": args.trials}
    return out


def build_spec(args: argparse.Namespace) -> Any:
    """The run's spec: the YAML file (if any) with the command-line options on top."""
    from trainpipe.spec import default_model_name, load_spec, merge_dicts, parse_spec

    overrides = _overrides(args)
    if args.spec:
        return load_spec(args.spec, overrides)
    if not args.data or not args.target:
        raise SpecError("give a spec file, or at least --data URI and --target COLUMN")
    overrides.setdefault("name", default_model_name(args.data[0]))
    return parse_spec(merge_dicts({}, overrides), source="from the command line")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_train_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    reused = " (identical model already stored: reused)" if result["reused"] else ""
    console.print(f"[bold green]model {result['model']} version {result['version']}[/]{reused}")
    console.print(f"stored at {result['uri']} (model card: model_card.md)")
    inferred = "inferred: " if result["task_inferred"] else ""
    console.print(f"task: {result['task']} ({inferred}{result['task_reason']})")
    rows = result["rows"]
    console.print(f"rows train/valid/test: {rows['train']}/{rows['valid']}/{rows['test']}; "
                  f"dropped for a null target: {result['dropped_null_target']}")
    if result.get("contract_violations"):
        console.print(f"[bold yellow]warning:[/] {result['contract_violations']} data-contract violation(s) "
                      "accepted (validation.mode: warn); see the validation report")
    for dropped in result.get("dropped_features", []):
        console.print(f"not a feature: {dropped['column']} ({dropped['reason']})")
    table = Table(title="holdout metrics")
    for column in ("metric", "model", "trivial baseline"):
        table.add_column(column)
    for name, value in result["metrics"].items():
        table.add_row(name, _fmt(value), _fmt(result["baseline_metrics"][name]))
    console.print(table)
    stages = ", ".join(f"{n} " + ("cached" if s["cached"] else f"{s['seconds']:.2f}s")
                       for n, s in result["stages"].items())
    console.print(f"stages: {stages}")


def cmd_train(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    _prepare_prefect()
    from flows.train import train_flow

    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            result = train_flow(spec)
        print(json.dumps(result, default=str))
    elif args.verbose:
        result = train_flow(spec)
        print_train_summary(result)
    else:
        with stage_progress(f"training {spec.name}"):
            result = train_flow(spec)
        print_train_summary(result)
    return 0


class _StageLines(logging.Handler):
    """Prints one line per finished stage, from Prefect's own task-run log records."""

    def __init__(self, console: Any):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        name = getattr(record, "task_name", None)
        if not name or not message.startswith("Finished in state"):
            return
        if "Cached" in message:
            self.console.print(f"  [cyan]cached[/]  {name}")
        elif "Failed" in message or "Crashed" in message:
            self.console.print(f"  [red]failed[/]  {name}")
        else:
            self.console.print(f"  [green]done[/]    {name}")


@contextlib.contextmanager
def stage_progress(title: str) -> Any:
    """A spinner and a line per stage on stderr.

    Prefect's INFO lines still reach its server (the run page shows them); the console
    shows only warnings and errors from here on, until the command exits.
    """
    from rich.console import Console

    console = Console(stderr=True)
    for handler in logging.getLogger().handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.addFilter(_ExpectedErrorLines())
    lines = _StageLines(console)
    task_logger = logging.getLogger("prefect.task_runs")
    task_logger.setLevel(logging.INFO)  # the stage lines come from its INFO records
    task_logger.addHandler(lines)
    try:
        with console.status(title):
            yield
    finally:
        task_logger.removeHandler(lines)


def _artifacts(args: argparse.Namespace) -> str:
    from trainpipe import storage
    from trainpipe.spec import default_artifacts_uri

    return storage.normalize_root(args.artifacts or default_artifacts_uri())


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.predict import check_output_uri

    check_output_uri(args.out)
    _prepare_prefect()
    from flows.predict import predict_flow

    with contextlib.redirect_stdout(sys.stderr):
        result = predict_flow(model=args.model, data=args.data, out=args.out, artifacts=_artifacts(args),
                              keep=args.keep or [])
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"scored {result['rows']} rows with {result['model']} v{result['version']} -> {result['out']}")
    for column, count in result["unseen_categories"].items():
        print(f"note: {count} row(s) of {column!r} hold categories not seen in training (scored as missing)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tasks import registry

    artifacts = _artifacts(args)
    if args.action == "list":
        rows = []
        for name in registry.list_models(artifacts):
            versions = registry.list_versions(artifacts, name)
            manifest = registry.read_manifest(artifacts, name, versions[-1])
            metric = manifest["headline_metric"]
            rows.append({"model": name, "versions": len(versions), "latest": versions[-1], "task": manifest["task"],
                         "metric": metric, "value": manifest["metrics"][metric], "created_at": manifest["created_at"]})
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no models in {artifacts}")
        else:
            for row in rows:
                print(f"{row['model']}: {row['versions']} version(s), latest v{row['latest']} "
                      f"({row['task']}, {row['metric']}={_fmt(row['value'])}, {row['created_at']})")
        return 0
    if not args.ref:
        raise SpecError("models show needs NAME[:VERSION]")
    name, version = registry.resolve_version(artifacts, args.ref)
    manifest = registry.read_manifest(artifacts, name, version)
    if args.json:
        print(json.dumps(manifest, default=str))
        return 0
    print(f"{name} v{version}  (versions: {', '.join(map(str, registry.list_versions(artifacts, name)))})")
    print(f"  uri: {manifest['uri']}")
    print(f"  created: {manifest['created_at']} by {manifest['created_by']}; "
          f"Prefect run {manifest['prefect']['flow_run_id']}")
    print(f"  task: {manifest['task']}, target {manifest['target']!r}")
    print(f"  data: fingerprint {manifest['data']['fingerprint'][:16]}, {len(manifest['data']['sources'])} file(s)")
    print(f"  code: {manifest['code']['git_commit'] or 'no git'}, source {manifest['code']['source_sha256'][:16]}")
    from tasks.evaluate import METRICS

    for metric in METRICS[manifest["task"]]:
        headline = "  <- headline" if metric == manifest["headline_metric"] else ""
        print(f"  {metric}: {_fmt(manifest['metrics'][metric])} "
              f"(baseline {_fmt(manifest['baseline_metrics'][metric])}){headline}")
    print(f"  model card: {manifest['uri']}/model_card.md")
    return 0


def cmd_infra(args: argparse.Namespace) -> int:
    """Create or bring in line the work pools, queues and GPU concurrency limit (idempotent)."""
    import asyncio

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from trainpipe.infra import setup_infrastructure

    report = asyncio.run(setup_infrastructure(gpu_slots=args.gpu_slots))
    if args.json:
        print(json.dumps(report))
        return 0
    for pool, done in report["pools"].items():
        queues = ", ".join(f"{q} {d}" for q, d in report["queues"][pool].items())
        print(f"work pool {pool}: {done} (queues: {queues})")
    for name, done in report["concurrency_limits"].items():
        print(f"global concurrency limit {name} ({args.gpu_slots} slot(s)): {done}")
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """Emit `trainpipe.data.arrived` for a data location, as the watcher does (no settling wait)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from tasks.watch import build_event, check_name, listing, send_event, trained_version
    from trainpipe.errors import DataError
    from trainpipe.spec import default_model_name

    dataset = check_name(args.dataset or default_model_name(args.uri), "--dataset")
    seen = listing(args.uri)
    if seen is None:
        raise DataError(f"no data files (csv, parquet, ndjson) at {args.uri}")
    if args.model:
        check_name(args.model, "--model")
        version = trained_version(_artifacts(args), args.model, seen["fingerprint"])
        if version is not None:
            message = f"{args.model} v{version} was trained on this data (fingerprint {seen['fingerprint'][:16]})"
            print(json.dumps({"emitted": False, "trained_version": version}) if args.json
                  else f"{message}: no event")
            return 0
    event_id = send_event(build_event(dataset, args.uri, seen, args.model, source="notify"))
    if args.json:
        print(json.dumps({"emitted": True, "event_id": event_id, "dataset": dataset, **seen}))
    else:
        print(f"emitted trainpipe.data.arrived for {dataset} ({seen['files']} file(s), fingerprint "
              f"{seen['fingerprint'][:16]}): event {event_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description="Train, evaluate and version XGBoost models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model version from a spec file or options")
    train.add_argument("spec", nargs="?", help="YAML spec file (options below override its fields)")
    train.add_argument("--data", action="append", metavar="URI", help="data file, glob or folder (repeatable)")
    train.add_argument("--target", help="column to predict")
    train.add_argument("--task", choices=["binary", "multiclass", "regression"], help="default: inferred")
    train.add_argument("--name", help="model name (default: from the data file name)")
    train.add_argument("--artifacts", metavar="URI",
                       help="artifact store root (default $TRAINPIPE_ARTIFACTS or ./artifacts)")
    train.add_argument("--trials", type=int, help="Optuna tuning trials")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--json", action="store_true", help="print one JSON object with the result")
    train.add_argument("--verbose", action="store_true", help="show Prefect's own log lines instead of the progress")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="score rows with a stored model")
    predict.add_argument("--model", required=True, metavar="NAME[:VERSION]")
    predict.add_argument("--data", required=True, metavar="URI")
    predict.add_argument("--out", required=True, metavar="URI", help=".csv, .parquet or .ndjson")
    predict.add_argument("--artifacts", metavar="URI")
    predict.add_argument("--keep", action="append", metavar="COLUMN",
                         help="input column copied to the output beside the model's id columns (repeatable)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="list models or show a version")
    models.add_argument("action", choices=["list", "show"])
    models.add_argument("ref", nargs="?", metavar="NAME[:VERSION]")
    models.add_argument("--artifacts", metavar="URI")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    infra = sub.add_parser("infra", help="set up the work pools, queues and GPU concurrency limit on a Prefect server")
    infra.add_argument("action", choices=["setup"])
    infra.add_argument("--gpu-slots", type=int, default=1, help="GPU training runs at once (default 1)")
    infra.add_argument("--json", action="store_true")
    infra.set_defaults(func=cmd_infra)

    notify = sub.add_parser("notify", help="emit the trainpipe.data.arrived event for new data at URI")
    notify.add_argument("uri", metavar="URI", help="data file, glob, folder or s3:// prefix")
    notify.add_argument("--dataset", help="dataset name in the event (default: from the URI)")
    notify.add_argument("--model", help="skip the event when a version of this model holds the same data")
    notify.add_argument("--artifacts", metavar="URI")
    notify.add_argument("--json", action="store_true")
    notify.set_defaults(func=cmd_notify)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainpipeError as error:
        print(f"trainpipe: error: {error}", file=sys.stderr)
        return error.exit_code
    except PermissionError as error:
        print(f"trainpipe: error: no permission: {error.filename or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trainpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
