"""Validate: infer or enforce the model's data contract with pandera on polars.

The first run of a model name infers a contract (columns, types, nullability, numeric
ranges, category sets, the task and its classes) from its data; every later run is
checked against the contract published with the latest version, before any training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext

from tasks.common import TRANSIENT_RETRIES, cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.contract import MAX_CLASSES, column_dtype, contract_origin, infer_contract, infer_task
from trainpipe.errors import ContractViolation, DataError
from trainpipe.registry import latest_contract_ref
from trainpipe.results import ContractRef, Snapshot, Validated
from trainpipe.spec import TaskType, ValidationSpec

if TYPE_CHECKING:  # pandera pulls pandas (about 0.7 s): imported by the stage, not by the flow's import
    import pandera.polars as pa


# pandera's polars backend reads the frame's schema and collects once per column and check, each over the whole
# frame: its cost grows with the square of the column count (3,000 columns: over a minute). Checking blocks of
# columns keeps it linear; columns are checked independently, so the result is the same.
SCHEMA_BLOCK_COLUMNS = 64


def contract_dtypes(contract: dict[str, Any]) -> dict[str, pl.DataType]:
    """The dtype the contract gives each column; class labels keep their own type (the model's outputs are
    indexed by them); `contract.column_dtype` says which."""
    target = contract["target"]
    dtypes = {}
    for name, entry in contract["columns"].items():
        dtype = column_dtype(entry)
        if dtype is not None and not (name == target["name"] and target.get("classes") is not None):
            dtypes[name] = dtype
    return dtypes


def build_columns(
    contract: dict[str, Any], validation: ValidationSpec, only: Optional[set[str]] = None
) -> dict[str, pa.Column]:
    """pandera columns enforcing the contract on a frame already cast to its dtypes (`coerce_frame`): type,
    nullability, ranges, categories.

    `only` limits them to the columns present.
    """
    import pandera.polars as pa

    columns = {}
    target = contract["target"]
    dtypes = contract_dtypes(contract)
    for name, entry in contract["columns"].items():
        if only is not None and name not in only:
            continue
        checks = []
        if name == target["name"] and target.get("classes") is not None:
            if not validation.allow_new_categories:
                checks.append(pa.Check.isin(target["classes"]))
        else:
            if entry.get("min") is not None and entry.get("max") is not None:
                span = float(entry["max"]) - float(entry["min"])
                slack = validation.range_tolerance * (span if span > 0 else max(abs(float(entry["max"])), 1.0))
                checks.append(pa.Check.in_range(float(entry["min"]) - slack, float(entry["max"]) + slack))
            if entry.get("categories") is not None and not validation.allow_new_categories:
                checks.append(pa.Check.isin(entry["categories"]))
        columns[name] = pa.Column(dtypes.get(name), checks=checks, nullable=entry["nullable"])
    return columns


def coerce_frame(
    frame: pl.DataFrame, dtypes: dict[str, pl.DataType], max_examples: int
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Cast every column to its contract dtype in one polars expression; a value that does not convert becomes
    null and is reported (rows and examples), so the frame handed on always has the contract's dtypes."""
    schema = frame.schema  # built on every access: read it once
    casts = {name: dtype for name, dtype in dtypes.items() if name in schema and schema[name] != dtype}
    if not casts:
        return frame, []
    try:
        cast = frame.with_columns(pl.col(name).cast(dtype, strict=False) for name, dtype in casts.items())
    except pl.exceptions.PolarsError:  # a type with no conversion at all (a list, a struct): found column by column
        convertible = {}
        for name, dtype in casts.items():
            try:
                frame.select(pl.col(name).head(1).cast(dtype, strict=False))
                convertible[name] = dtype
            except pl.exceptions.PolarsError:
                pass
        cast, _ = coerce_frame(frame, convertible, max_examples)
        casts = convertible
    failed = cast.select(
        (frame.get_column(name).is_not_null() & pl.col(name).is_null()).sum().alias(name) for name in casts
    ).row(0, named=True)
    violations = []
    for name, count in failed.items():
        if not count:
            continue
        rows = (frame.get_column(name).is_not_null() & cast.get_column(name).is_null()).arg_true()
        violations.append({
            "column": name,
            "check": f"coerce_dtype('{casts[name]}')",
            "failing_rows": int(count),
            "example_rows": rows.head(max_examples).to_list(),
            "examples": frame.get_column(name).gather(rows).unique(maintain_order=True).head(max_examples).to_list(),
        })
    return cast, violations


def summarize_failures(failure_cases: pl.DataFrame, max_examples: int) -> list[dict[str, Any]]:
    """One violation per (column, check): how many rows fail and a few failing values."""
    violations = []
    grouped = failure_cases.with_columns(pl.col("column").fill_null("(table)"))
    for (column, check), cases in grouped.group_by(["column", "check"], maintain_order=True):
        rows = cases.get_column("index").drop_nulls()
        examples = cases.get_column("failure_case").unique(maintain_order=True).head(max_examples).to_list()
        violations.append(
            {
                "column": column if column != "(table)" else None,
                "check": check,
                "failing_rows": int(rows.n_unique()) if rows.len() else None,
                "example_rows": [int(r) for r in rows.head(max_examples).to_list()],
                "examples": examples,
            }
        )
    return violations


def whole_column_violation(column: str, check: str) -> dict[str, Any]:
    """A violation of a column as a whole (missing, wrong role), not of particular rows."""
    return {"column": column, "check": check, "failing_rows": None, "example_rows": [], "examples": []}


def check_frame(
    frame: pl.DataFrame, contract: dict[str, Any], validation: ValidationSpec, checks: bool = True,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Validate `frame` against the contract; returns the frame cast to the contract's dtypes (values that do
    not convert are null) and the violations found. `checks=False`: the cast only (a contract just inferred
    from this frame holds by construction, and pandera's per-column checks cost about 3 ms a column)."""
    present = set(frame.columns)
    missing = [whole_column_violation(name, "column_in_dataframe") for name in contract["columns"]
               if name not in present]
    typed, violations = coerce_frame(frame, contract_dtypes(contract), validation.max_examples)
    if not checks:  # a first run casts and goes on, without pandera's import (pandas under it, about 0.5 s)
        return typed, missing + violations
    import pandera.polars as pa

    columns = build_columns(contract, validation, only=present)
    names = list(columns)
    for start in range(0, len(names), SCHEMA_BLOCK_COLUMNS):
        block = names[start:start + SCHEMA_BLOCK_COLUMNS]
        try:
            pa.DataFrameSchema({name: columns[name] for name in block}).validate(typed.select(block), lazy=True)
        except pa.errors.SchemaErrors as errors:
            violations += summarize_failures(errors.failure_cases, validation.max_examples)
    return typed, missing + violations


def nan_as_missing(frame: pl.DataFrame) -> pl.DataFrame:
    """Float NaN as null: a missing value, as XGBoost reads it (Parquet and NumPy writers use NaN for missing),
    so the contract counts it as missing rather than as a value outside every range."""
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    if not floats:
        return frame
    # only the columns that hold a NaN are rewritten: the others stay shared with the frame read (at 10M rows
    # rewriting 20 float columns held 1.6 GB more for the whole of validation)
    has_nan = frame.select(pl.col(floats).is_nan().any()).row(0, named=True)
    with_nan = [name for name in floats if has_nan[name]]
    return frame.with_columns(pl.col(with_nan).fill_nan(None)) if with_nan else frame


def require_columns(frame: pl.DataFrame, columns: dict[str, list[str]], source: str) -> None:
    """Fail with one message naming every column the spec names but the data lacks."""
    missing = [f"{role} {name!r}" for role, names in columns.items() for name in names if name not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing {', '.join(missing)}; the data has columns {', '.join(frame.columns)}"
            + separator_hint(frame.columns)
        )


def separator_hint(columns: list[str]) -> str:
    """A hint when a whole header landed in one column: the file is likely split by another character."""
    if len(columns) != 1:
        return ""
    for char, name in ((";", "';'"), ("\t", "a tab"), ("|", "'|'")):
        if char in columns[0]:
            return f" (one column whose name holds {name}: is the file's separator {name}? set data.separator)"
    return ""


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max


def reject_non_finite(frame: pl.DataFrame, skip: list[str], source: str, max_rows: int = 5) -> None:
    """Fail naming the column and rows of any ±inf or value beyond float32's range: XGBoost holds features
    and labels as float32, so such a value is either an upstream bug or unrepresentable, never data to learn.
    Rows count from 1 after the header, over the inputs in order (NaN is missing and is not checked here)."""
    problems = []
    floats = [name for name, dtype in frame.schema.items() if name not in skip and dtype.is_float()]
    if not floats:
        return
    # one pass over every float column finds the offenders; only those are looked at row by row
    counts = frame.select((pl.col(floats).abs() > FLOAT32_MAX).sum()).row(0, named=True)
    for name in (n for n in floats if counts[n]):
        bad = frame.select(pl.arg_where(pl.col(name).abs() > FLOAT32_MAX)).to_series()
        if bad.len():
            rows = ", ".join(str(r + 1) for r in bad.head(max_rows).to_list()) + (", ..." if bad.len() > max_rows else "")
            values = ", ".join(sorted({repr(v) for v in frame.get_column(name).gather(bad.head(max_rows)).to_list()}))
            problems.append(f"column {name!r} holds {values} in {bad.len()} row(s) (rows {rows})")
    if problems:
        raise DataError(f"{source}: {'; '.join(problems)}; ±inf and values beyond float32's range "
                        f"(±{FLOAT32_MAX:.4g}) cannot be trained on: fix or blank them")


def resolve_contract(
    target_values: pl.Series,
    infer: Callable[[TaskType], dict[str, Any]],
    contract: Optional[dict[str, Any]],
    snapshot_fingerprint: str,
    target: str,
    task_type: Optional[TaskType],
    id_columns: list[str],
    drop_columns: list[str],
    source: str,
) -> tuple[dict[str, Any], TaskType, str, str, list[dict[str, Any]]]:
    """The contract in force (inferred by `infer` on a first run), the task, why, where the contract came from,
    and the violations of the target's role."""
    violations: list[dict[str, Any]] = []
    if contract is None:
        try:
            inferred_task, reason = infer_task(target_values)
        except DataError as error:
            raise DataError(f"{source}: {error}") from None
        resolved_task = task_type or inferred_task
        if task_type and task_type != inferred_task:
            reason = f"set in the spec (the data alone suggests {inferred_task}: {reason})"
        elif task_type:
            reason = "set in the spec"
        contract = infer(resolved_task)
        contract["target"]["reason"] = reason
        contract["origin"] = contract_origin(snapshot_fingerprint, target, task_type, id_columns, drop_columns)
        contract_source = "inferred"
        n_classes = len(contract["target"].get("classes") or [])
        if resolved_task == "binary" and n_classes != 2:
            raise DataError(f"{source}: task is binary but target {target!r} has {n_classes} classes")
        if n_classes > MAX_CLASSES:
            raise DataError(f"{source}: target {target!r} has {n_classes} classes (at most {MAX_CLASSES}); "
                            "is it a regression target?")
    else:
        resolved_task = contract["target"]["task"]
        reason = f"{contract['target'].get('reason', 'set')}; kept from the model's data contract"
        contract_source = "existing"
        if contract["target"]["name"] != target:
            wrong = f"target is {contract['target']['name']!r} in the contract"
            violations.append(whole_column_violation(target, wrong))
        if task_type and task_type != resolved_task:
            wrong = f"task is {resolved_task!r} in the contract, {task_type!r} in the spec"
            violations.append(whole_column_violation(target, wrong))
    return contract, resolved_task, reason, contract_source, violations


def validate_snapshot(
    snapshot_uri: str,
    snapshot_fingerprint: str,
    target: str,
    task_type: Optional[TaskType],
    id_columns: list[str],
    drop_columns: list[str],
    time_column: Optional[str],
    validation: ValidationSpec,
    contract: Optional[dict[str, Any]],
    source: Optional[str] = None,
) -> tuple[pl.DataFrame, dict[str, Any], dict[str, Any]]:
    """Check a snapshot: returns the validated frame, the contract in force and the report.

    `source` names the user's input files in messages (the snapshot is an internal copy).
    """
    source = source or snapshot_uri
    frame = storage.read_parquet(snapshot_uri)
    require_columns(
        frame,
        {"target": [target], "id column": id_columns, "time column": [time_column] if time_column else []},
        source=source,
    )
    frame = nan_as_missing(frame.drop([c for c in drop_columns if c in frame.columns]))
    reject_non_finite(frame, id_columns, source)
    null_target = int(frame.get_column(target).null_count())
    if null_target:  # a filter that keeps every row would still copy the frame
        frame = frame.filter(pl.col(target).is_not_null())
    if frame.height == 0:
        raise DataError(f"{source}: every row has a null target {target!r}")

    contract, resolved_task, reason, contract_source, violations = resolve_contract(
        frame.get_column(target), lambda task: infer_contract(frame, target, task, id_columns), contract,
        snapshot_fingerprint, target, task_type, id_columns, drop_columns, source)
    # The first run casts its own data too, so every run's frame has the contract's dtypes; the contract's
    # checks (inferred from this very frame) run only against later data.
    checked, found = check_frame(frame, contract, validation, checks=contract_source == "existing")
    violations.extend(found)

    report = {
        "leakage": leaking_columns(frame, target, id_columns),
        "source": source,
        "snapshot": snapshot_uri,
        "rows_in": frame.height + null_target,
        "rows_valid": frame.height,
        "dropped_null_target": null_target,
        "contract": contract_source,
        "task": resolved_task,
        "task_reason": reason,
        "mode": validation.mode,
        "new_columns": sorted(set(frame.columns) - set(contract["columns"])),
        "violations": violations,
        "passed": not violations,
    }
    return checked, contract, report


def reject_non_finite_lazy(scan: pl.LazyFrame, skip: list[str], source: str) -> None:
    """`reject_non_finite` over a lazy scan: one streaming pass counts the offenders; only the columns holding
    any are read to name their rows."""
    floats = [name for name, dtype in scan.collect_schema().items() if name not in skip and dtype.is_float()]
    if not floats:
        return
    counts = scan.select((pl.col(floats).abs() > FLOAT32_MAX).sum()).collect(engine="streaming").row(0, named=True)
    bad = [name for name in floats if counts[name]]
    if bad:
        reject_non_finite(scan.select(bad).collect(engine="streaming"), skip, source)


def infer_contract_by_column(scan: pl.LazyFrame, target: str, task: TaskType, id_columns: list[str]) -> dict[str, Any]:
    """`infer_contract` one column at a time (each beside the target): every column's entry is computed from
    that column alone, so the contract is the same as over the whole frame, in the memory of two columns."""
    contract: Optional[dict[str, Any]] = None
    columns: dict[str, Any] = {}
    for name in scan.collect_schema().names():
        block = scan.select(list(dict.fromkeys([name, target]))).collect(engine="streaming")
        part = infer_contract(block, target, task, id_columns)
        columns[name] = part["columns"][name]
        contract = contract or part
    assert contract is not None
    return {**contract, "columns": columns}


def _equal_as_text(values: pl.Series, label: pl.Series, head: int = 1000) -> bool:
    """`leaking_columns`' test for one column; its first rows first, so that a column that differs early is never
    cast to text whole (a float column as text is several times its size)."""
    if not values.head(head).cast(pl.String, strict=False).equals(label.head(head).rename(values.name)):
        return False
    return values.cast(pl.String, strict=False).equals(label.rename(values.name))


def check_by_column(
    scan: pl.LazyFrame, contract: dict[str, Any], validation: ValidationSpec, target: str, id_columns: list[str]
) -> tuple[pl.LazyFrame, list[dict[str, Any]], list[str]]:
    """`check_frame` and `leaking_columns` one column at a time (columns are checked independently: the same
    violations); returns the lazy plan casting the scan to the contract's dtypes, the violations and the
    leaking columns."""
    schema = scan.collect_schema()
    order = {name: i for i, name in enumerate(contract["columns"])}
    missing = [whole_column_violation(name, "column_in_dataframe") for name in contract["columns"]
               if name not in schema]
    dtypes = contract_dtypes(contract)
    label = scan.select(pl.col(target).cast(pl.String)).collect(engine="streaming").to_series()
    coerced, checked, table, leakage, casts = [], [], [], [], {}
    for name in schema.names():
        column = scan.select(name).collect(engine="streaming")
        if name in dtypes and schema[name] != dtypes[name]:
            try:
                column.select(pl.col(name).head(1).cast(dtypes[name], strict=False))
                casts[name] = dtypes[name]
            except pl.exceptions.PolarsError:
                pass
        _, found = check_frame(column, contract, validation)
        for violation in found:
            if violation["check"] == "column_in_dataframe":
                continue
            if violation["column"] is None:
                if violation not in table:
                    table.append(violation)
            elif violation["check"].startswith("coerce_dtype("):
                coerced.append(violation)
            else:
                checked.append(violation)
        if name != target and name not in id_columns and _equal_as_text(column.get_column(name), label):
            leakage.append(name)
        del column
    def rank(violation: dict[str, Any]) -> int:  # the in-memory order: the contract's column order
        return order.get(violation["column"], len(order))

    typed = scan.with_columns(pl.col(name).cast(dtype, strict=False) for name, dtype in casts.items())
    return typed, missing + sorted(coerced, key=rank) + sorted(checked, key=rank) + table, leakage


def validate_snapshot_streaming(
    snapshot_uri: str,
    snapshot_fingerprint: str,
    target: str,
    task_type: Optional[TaskType],
    id_columns: list[str],
    drop_columns: list[str],
    time_column: Optional[str],
    validation: ValidationSpec,
    contract: Optional[dict[str, Any]],
    source: Optional[str] = None,
) -> tuple[pl.LazyFrame, dict[str, Any], dict[str, Any]]:
    """`validate_snapshot` in bounded memory (out of core): the same checks, contract and messages, one column
    at a time over a lazy scan; returns the validated rows as a lazy plan (sunk by the caller)."""
    from trainpipe.outofcore import scan_uri

    source = source or snapshot_uri
    scan = scan_uri(snapshot_uri)
    require_columns(
        pl.DataFrame(schema=scan.collect_schema()),
        {"target": [target], "id column": id_columns, "time column": [time_column] if time_column else []},
        source=source,
    )
    scan = scan.drop([c for c in drop_columns if c in scan.collect_schema()])
    floats = [name for name, dtype in scan.collect_schema().items() if dtype.is_float()]
    if floats:
        scan = scan.with_columns(pl.col(floats).fill_nan(None))
    reject_non_finite_lazy(scan, id_columns, source)
    null_target = int(scan.select(pl.col(target).null_count()).collect(engine="streaming").item())
    scan = scan.filter(pl.col(target).is_not_null())
    rows = int(scan.select(pl.len()).collect(engine="streaming").item())
    if rows == 0:
        raise DataError(f"{source}: every row has a null target {target!r}")

    target_values = scan.select(target).collect(engine="streaming").to_series()
    contract, resolved_task, reason, contract_source, violations = resolve_contract(
        target_values, lambda task: infer_contract_by_column(scan, target, task, id_columns), contract,
        snapshot_fingerprint, target, task_type, id_columns, drop_columns, source)
    del target_values
    typed, found, leakage = check_by_column(scan, contract, validation, target, id_columns)
    violations.extend(found)
    names = scan.collect_schema().names()
    report = {
        "leakage": leakage,
        "source": source,
        "snapshot": snapshot_uri,
        "rows_in": rows + null_target,
        "rows_valid": rows,
        "dropped_null_target": null_target,
        "contract": contract_source,
        "task": resolved_task,
        "task_reason": reason,
        "mode": validation.mode,
        "new_columns": sorted(set(names) - set(contract["columns"])),
        "violations": violations,
        "passed": not violations,
    }
    return typed, contract, report


def leaking_columns(frame: pl.DataFrame, target: str, skip: list[str]) -> list[str]:
    """Features whose every value equals the target's, row by row (a copy of the label under another name):
    a model trained on one scores perfectly and learns nothing usable; worth a warning, not a refusal."""
    label = frame.get_column(target).cast(pl.String)
    return [name for name in frame.columns
            if name != target and name not in skip and _equal_as_text(frame.get_column(name), label)]


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as table rows for the Prefect artifact."""
    if not report["violations"]:
        return [{"column": "(all)", "check": "contract", "failing_rows": 0, "examples": ""}]
    return [
        {"column": v["column"] or "(table)", "check": v["check"], "failing_rows": v["failing_rows"],
         "examples": ", ".join(map(str, v["examples"]))}
        for v in report["violations"]
    ]


def describe_violations(report: dict[str, Any]) -> str:
    """One line per violation: column, check, how many rows and which (counted from 1 after the header, as
    the ingest messages count them), a few distinct examples. Nulls that are only the values a failed
    type coercion left behind are not reported a second time."""
    coerced = {(v["column"], tuple(v["example_rows"])) for v in report["violations"]
               if v["check"].startswith("coerce_dtype")}

    def line(v: dict[str, Any]) -> str:
        where = f"column {v['column']!r}" if v["column"] else "(table)"
        if v["check"] == "column_in_dataframe":
            return f"  {where}: missing (the model's data contract requires it)"
        rows = f"{v['failing_rows']} row(s)" if v["failing_rows"] is not None else "the whole column"
        if v["example_rows"]:
            shown = ", ".join(str(r + 1) for r in v["example_rows"])
            more = ", ..." if v["failing_rows"] is not None and v["failing_rows"] > len(v["example_rows"]) else ""
            rows += f" (rows {shown}{more})"
        examples = "; e.g. " + ", ".join(map(repr, v["examples"][:3])) if v["examples"] else ""
        return f"  {where}: {v['check']} fails on {rows}{examples}"

    return "\n".join(line(v) for v in report["violations"]
                     if not (v["check"] == "not_nullable" and (v["column"], tuple(v["example_rows"])) in coerced))


def _run_folder(artifacts: str) -> str:
    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context and context.flow_run else "local"
    return storage.join(artifacts, "runs", run_id)


@cached_stage("validate", Validated)
def validate_task(
    snapshot: Snapshot,
    target: str,
    task_type: Optional[TaskType],
    id_columns: list[str],
    drop_columns: list[str],
    time_column: Optional[str],
    validation: ValidationSpec,
    contract_ref: Optional[ContractRef],
    artifacts: str,
    out_of_core: bool = False,
) -> Validated:
    started = time.perf_counter()
    folder = current_stage_dir("validate")
    contract = storage.read_json(contract_ref.uri) if contract_ref else None
    source = ", ".join(f["uri"] for f in snapshot.sources) or None
    check = validate_snapshot_streaming if out_of_core else validate_snapshot
    frame, contract, report = check(
        snapshot.uri, snapshot.fingerprint, target, task_type, id_columns, drop_columns, time_column,
        validation, contract, source,
    )
    create_table_artifact(
        key="validation-report",
        table=report_rows(report),
        description=(
            f"{report['rows_valid']} valid rows, {report['dropped_null_target']} dropped for a null target, "
            f"{len(report['violations'])} violation(s); contract {report['contract']}"
        ),
    )
    if report["violations"] and validation.mode == "enforce":
        report_uri = storage.join(_run_folder(artifacts), "validation_report.json")
        storage.write_json(report_uri, report)
        raise ContractViolation(
            f"data {report['source']} breaks the data contract of this model:\n{describe_violations(report)}"
            f"\nreport: {report_uri}",
            report_uri=report_uri,
        )
    if report["leakage"]:
        get_run_logger().warning("%s: column(s) %s equal the target %r in every row: likely target leakage; "
                                 "drop them (drop_columns) unless that is intended", report["source"],
                                 ", ".join(repr(c) for c in report["leakage"]), target)
    if report["new_columns"] and contract_ref is not None:
        get_run_logger().warning("%s: column(s) %s are not in the data contract (of version %s): allowed, and "
                                 "used as features; the new version's contract includes them", report["source"],
                                 ", ".join(repr(c) for c in report["new_columns"]), contract_ref.version)
    if report["violations"]:
        get_run_logger().warning("validation.mode is warn: data %s breaks the data contract:\n%s",
                                 report["source"], describe_violations(report))
    if isinstance(frame, pl.LazyFrame):
        from trainpipe.outofcore import sink_plan

        digest = sink_plan(frame, storage.join(folder, "data.parquet"))
    else:
        digest = storage.write_parquet(frame, storage.join(folder, "data.parquet"))
    storage.write_json(storage.join(folder, "contract.json"), contract)
    storage.write_json(storage.join(folder, "report.json"), report)
    meta = {
        "uri": storage.join(folder, "data.parquet"),
        "contract_uri": storage.join(folder, "contract.json"),
        "report_uri": storage.join(folder, "report.json"),
        "rows": report["rows_valid"],
        "task_type": report["task"],
        "task_reason": report["task_reason"],
        "classes": contract["target"].get("classes"),
        "dropped_null_target": report["dropped_null_target"],
        "violations": len(report["violations"]),
        "leakage": report["leakage"],
        "out_of_core": out_of_core,
    }
    return finish_stage(folder, Validated, meta, started, content=[digest, meta["task_type"], meta["classes"]])


@task(name="find-contract", **TRANSIENT_RETRIES)
def contract_ref_task(
    artifacts: str, name: str, snapshot: Snapshot, target: str, task_type: Optional[str],
    id_columns: list[str], drop_columns: list[str],
) -> Optional[ContractRef]:
    """Never cached: a newly published version must be seen by the next run."""
    origin = contract_origin(snapshot.fingerprint, target, task_type, id_columns, drop_columns)
    ref = latest_contract_ref(artifacts, name, origin)
    return ContractRef(**ref) if ref else None
