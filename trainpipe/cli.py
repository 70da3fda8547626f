"""The `trainpipe` command: train, predict, models list/show/promote/rollback, audit verify, reproduce,
infra setup, notify.

Exit codes: 0 success, 1 unexpected failure, 2 bad spec or option, 3 unreadable or
unsuitable data, 4 data-contract violation, 5 missing model or version, 6 tuning
produced no usable trial, 7 audit log does not verify or a version was not reproduced.
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
    print_tuning_line(console, result.get("tuning"))
    stages = ", ".join(f"{n} " + ("cached" if s["cached"] else f"{s['seconds']:.2f}s")
                       for n, s in result["stages"].items())
    console.print(f"stages: {stages}")
    print_promotion(console, result)


def print_promotion(console: Any, result: dict[str, Any]) -> None:
    promotion = result.get("promotion")
    if not promotion:
        return
    colour = "green" if promotion.get("moved") else "yellow"
    console.print(f"[bold {colour}]{promotion['reason']}[/]")
    if result.get("drift_large_shifts"):
        console.print(f"[bold yellow]data drift:[/] large shift against the champion's training data in "
                      f"{', '.join(result['drift_large_shifts'])} (see the model card)")


def print_tuning_line(console: Any, tuning: Optional[dict[str, Any]]) -> None:
    if not tuning or not tuning.get("performed"):
        return
    counts = tuning["counts"]
    console.print(f"tuning: study {tuning['study_name']} ({tuning['storage']}): {counts['complete']} complete, "
                  f"{counts['pruned']} pruned, {counts['fail']} failed; best {tuning['metric']} "
                  f"{tuning['best_value']:.6g} (trial {tuning['best_trial']})"
                  + (" - stopped by the timeout" if tuning["stopped_by"] == "timeout" else ""))


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
                         "metric": metric, "value": manifest["metrics"][metric], "created_at": manifest["created_at"],
                         "champion": registry.champion(artifacts, name)})
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no models in {artifacts}")
        else:
            for row in rows:
                champion = f"champion v{row['champion']}" if row["champion"] else "no champion"
                print(f"{row['model']}: {row['versions']} version(s), latest v{row['latest']}, {champion} "
                      f"({row['task']}, latest {row['metric']}={_fmt(row['value'])}, {row['created_at']})")
        return 0
    if args.action in ("promote", "rollback"):
        return cmd_models_move(args, artifacts)
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
    print(f"  model card: {manifest['uri']}/model_card.md (plots: model_card.html)")
    print_registry_state(artifacts, name, version, manifest)
    return 0


def print_registry_state(artifacts: str, name: str, version: int, manifest: dict[str, Any]) -> None:
    """Champion, aliases, this version's gate verdict and the latest alias moves."""
    from tasks import registry

    aliases = registry.aliases(artifacts, name)
    champion = aliases.get("champion")
    others = ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items()) if a != "champion")
    print(f"  champion: {'v' + str(champion) if champion else 'none'}"
          f"{' (this version)' if champion == version else ''}{'; aliases: ' + others if others else ''}")
    verdict = manifest.get("promotion")
    if verdict:
        print(f"  gate at training: {verdict['reason']}")
    for move in registry.alias_history(artifacts, name)[-5:]:
        came = f"v{move['from_version']}" if move.get("from_version") else "none"
        print(f"  {move['at']} {move['alias']}: {came} -> v{move['version']} ({move.get('kind')}) by {move['by']}: "
              f"{move.get('reason') or ''}")


def cmd_models_move(args: argparse.Namespace, artifacts: str) -> int:
    """models promote NAME:VERSION --reason TEXT [--alias A]; models rollback NAME [--reason TEXT]."""
    from tasks import registry

    if not args.ref:
        raise SpecError(f"models {args.action} needs {'NAME:VERSION' if args.action == 'promote' else 'NAME'}")
    if args.action == "promote":
        if not args.reason:
            raise SpecError("models promote needs --reason TEXT (it is recorded in the audit log)")
        moved = registry.set_alias(artifacts, args.ref, args.alias or "champion", args.reason)
    else:
        name, version = registry.parse_ref(args.ref)
        if version is not None:
            raise SpecError("models rollback takes a model NAME, not NAME:VERSION")
        moved = registry.rollback(artifacts, name, args.reason or "rollback (no reason given)")
    if args.json:
        print(json.dumps(moved))
    elif moved["moved"]:
        print(f"{moved['model']}: {moved['alias']} v{moved['from_version'] or '-'} -> v{moved['version']} "
              f"(audit record {moved['audit_seq']}): {moved['reason']}")
    else:
        print(f"{moved['model']}: {moved['reason']}; nothing changed")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tasks import audit, registry
    from trainpipe.errors import IntegrityError

    artifacts = _artifacts(args)
    name, _ = registry.parse_ref(args.name)
    records = audit.read_log(artifacts, name)
    if not records and not registry.list_versions(artifacts, name):
        raise registry.RegistryError(f"no audit log or model named {name!r} in {artifacts}")
    if args.action == "log":
        for record in records:
            print(json.dumps(record) if args.json else
                  f"{record['seq']:>5} {record['at']} {record['event']:<17} v{record.get('version')} by "
                  f"{record['by']}: {record.get('reason') or (record.get('verdict') or {}).get('reason') or ''}")
        return 0
    problems = registry.verify_registry(artifacts, name)
    if args.json:
        print(json.dumps({"model": name, "records": len(records), "ok": not problems, "problems": problems}))
    if problems:
        raise IntegrityError(f"audit log of {name!r} does not verify ({len(problems)} problem(s)):\n  "
                             + "\n  ".join(problems))
    if not args.json:
        print(f"{name}: audit log intact ({len(records)} records, chain and versions agree)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from trainpipe.errors import IntegrityError

    artifacts = _artifacts(args)
    _prepare_prefect()
    from tasks.reproduce import reproduce

    with contextlib.redirect_stdout(sys.stderr):
        report = reproduce(artifacts, args.ref, args.tolerance)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']} v{report['version']}: {'reproduced' if report['reproduced'] else 'NOT reproduced'}"
              f" - {report['reason']}")
        diffs = report["differences"]
        if diffs["source_changed"] or diffs["dependencies_changed"]:
            print(f"note: since then the source code {'changed' if diffs['source_changed'] else 'is the same'}"
                  f" and the pinned dependencies {'changed' if diffs['dependencies_changed'] else 'are the same'}")
    if not report["reproduced"]:
        raise IntegrityError(f"{report['model']}:{report['version']} was not reproduced: {report['reason']}")
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

    models = sub.add_parser("models", help="list models, show a version, promote or roll back by hand")
    models.add_argument("action", choices=["list", "show", "promote", "rollback"])
    models.add_argument("ref", nargs="?", metavar="NAME[:VERSION]")
    models.add_argument("--artifacts", metavar="URI")
    models.add_argument("--reason", help="why (promote, rollback): recorded in the audit log with who")
    models.add_argument("--alias", help="promote: move this alias instead of champion")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    audit = sub.add_parser("audit", help="verify or print a model's audit log")
    audit.add_argument("action", choices=["verify", "log"])
    audit.add_argument("name", metavar="NAME")
    audit.add_argument("--artifacts", metavar="URI")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

    reproduce = sub.add_parser("reproduce", help="re-train a version from its manifest and compare the model")
    reproduce.add_argument("ref", metavar="NAME:VERSION")
    reproduce.add_argument("--artifacts", metavar="URI")
    reproduce.add_argument("--tolerance", type=float, default=1e-6,
                           help="largest raw-score difference accepted when the model files differ (default 1e-6)")
    reproduce.add_argument("--json", action="store_true")
    reproduce.set_defaults(func=cmd_reproduce)

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
