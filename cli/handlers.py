"""One handler per subcommand: build the inputs, call a flow or the library, print, return the exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from cli.embedded import prefect_api
from cli.logs import foreground_run, prepare_prefect, stage_progress
from cli.printing import print_model_list, print_registry_state, print_train_summary, print_version
from trainpipe.errors import SpecError


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


def cmd_train(args: argparse.Namespace) -> int:
    prepare_prefect()
    with prefect_api() as api:  # an embedded server starts now, beside the work and imports below
        spec = build_spec(args)
        from flows.train import train_flow

        if args.json:
            with contextlib.redirect_stdout(sys.stderr), foreground_run(api):
                result = train_flow(spec)
        elif args.verbose:
            with foreground_run(api):
                result = train_flow(spec)
        else:
            with stage_progress(f"training {spec.name}"), foreground_run(api):
                result = train_flow(spec)
    if args.json:
        print(json.dumps(result, default=str))
        for dropped in result.get("dropped_features", []):  # also said when --json keeps stdout for the object
            print(f"note: not a feature: {dropped['column']!r} ({dropped['reason']})", file=sys.stderr)
    else:
        print_train_summary(result)
    return 0


def _artifacts(args: argparse.Namespace) -> str:
    from trainpipe import storage
    from trainpipe.spec import default_artifacts_uri

    return storage.normalize_root(args.artifacts or default_artifacts_uri())


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.predict import check_output_uri

    check_output_uri(args.out)
    prepare_prefect()
    with prefect_api() as api:
        from flows.predict import predict_flow

        with contextlib.redirect_stdout(sys.stderr), foreground_run(api):
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
    from trainpipe import registry

    artifacts = _artifacts(args)
    if args.action == "list":
        rows = registry.model_summaries(artifacts)
        if args.json:
            print(json.dumps(rows))
        else:
            print_model_list(rows, artifacts)
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
    print_version(manifest, registry.list_versions(artifacts, name))
    print_registry_state(registry.aliases(artifacts, name), version, manifest, registry.alias_history(artifacts, name))
    return 0


def cmd_models_move(args: argparse.Namespace, artifacts: str) -> int:
    """models promote NAME:VERSION --reason TEXT [--alias A]; models rollback NAME [--reason TEXT]."""
    from trainpipe import registry

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
    from trainpipe import audit, registry
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
    if args.action == "head":
        head = audit.chain_head(artifacts, name)
        print(json.dumps({"model": name, "head": head}) if args.json else head)
        return 0
    problems = registry.verify_registry(artifacts, name)
    if args.anchor:
        problems += audit.check_anchor(artifacts, name, args.anchor)
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
    prepare_prefect()
    with prefect_api() as api:
        from flows.reproduce import reproduce

        with contextlib.redirect_stdout(sys.stderr), foreground_run(api):
            report = reproduce(artifacts, args.ref, args.tolerance, args.metric_tolerance)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']} v{report['version']}: {'reproduced' if report['reproduced'] else 'NOT reproduced'}"
              f" - {report['reason']}")
        if "check" in report:
            print(f"check: {report['check']} (engine {report['engine']}: {report['check_reason']})")
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
    from cli.infra import setup_infrastructure

    report = asyncio.run(setup_infrastructure(gpu_slots=args.gpu_slots, dask_address=args.dask_address,
                                                 data_roots=args.data_roots))
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

