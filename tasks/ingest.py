"""Ingest: find the input files, fingerprint them, read them with polars, write a Parquet snapshot."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from tasks.common import TRANSIENT_RETRIES, cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.results import Snapshot, Sources
from trainpipe.sources import load_files, resolve_sources, sources_fingerprint
from trainpipe.spec import DataSpec


def ingest_files(files: list[dict[str, Any]], data: DataSpec, snapshot_uri: str) -> dict[str, Any]:
    """Read all inputs and write them as one Parquet snapshot; returns rows, columns and schema."""
    notes: list[str] = []
    frame = load_files(files, data, notes)
    if frame.height == 0:
        raise DataError(f"no rows in {', '.join(f['uri'] for f in files)}")
    digest = storage.write_parquet(frame, snapshot_uri)
    return {
        "sha256": digest,
        "uri": snapshot_uri,
        "rows": frame.height,
        "columns": frame.columns,
        "dtypes": {name: str(dtype) for name, dtype in frame.schema.items()},
        "sources": files,
        "notes": notes,
    }


@task(name="fingerprint-sources", **TRANSIENT_RETRIES)
def fingerprint_task(data: DataSpec) -> Sources:
    """List and fingerprint the inputs; never cached, since this is how changes are seen."""
    files = resolve_sources(data)
    return Sources(files=files, fingerprint=sources_fingerprint(files))


@cached_stage("ingest", Snapshot)
def ingest_task(sources: Sources, data: DataSpec, artifacts: str) -> Snapshot:
    started = time.perf_counter()
    folder = current_stage_dir("ingest")
    meta = ingest_files(sources.files, data, storage.join(folder, "snapshot.parquet"))
    for note in meta["notes"]:
        get_run_logger().warning("%s", note)
    return finish_stage(folder, Snapshot, meta, started, content=[meta["sha256"]])
