"""Data sources: list input files (local or s3://), fingerprint them, and read them with polars.

Used by ingest, predict, watch and reproduce alike.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, Optional

import polars as pl
from fsspec.implementations.local import LocalFileSystem

from trainpipe import storage
from trainpipe.errors import DataError, NoDataFiles, OutsideDataRoots
from trainpipe.spec import FORMAT_SUFFIXES, DataSpec, infer_format

GLOB_CHARS = set("*?[")



def _is_hidden(path: str) -> bool:
    """Dot files and _-prefixed markers (Spark's _SUCCESS, macOS ._ files) are never data."""
    return path.rsplit("/", 1)[-1].startswith((".", "_"))



def _is_data_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if _is_hidden(path):
        return False
    lowered = name.lower()
    for compression in (".gz", ".zst", ".bz2"):
        lowered = lowered.removesuffix(compression)
    return any(lowered.endswith(suffix) for suffix in FORMAT_SUFFIXES)



def _full_uri(fs: Any, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)



def list_source_files(uri: str) -> list[dict[str, Any]]:
    """The files one data URI names (file, glob or folder), with size and a content tag, sorted by URI."""
    with storage.guarded(uri):
        return _list_source_files(uri)


def _list_source_files(uri: str) -> list[dict[str, Any]]:
    fs, path = storage.get_fs(uri)
    fs.invalidate_cache()
    if GLOB_CHARS & set(path):
        paths = [p for p in fs.glob(path) if fs.isfile(p) and not _is_hidden(p)]
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if _is_data_file(p)]
    elif fs.isfile(path):
        paths = [path]
    else:
        raise DataError(f"data not found: {uri}")
    if not paths:
        raise NoDataFiles(f"no data files (csv, parquet, ndjson) under {uri}")
    files = []
    for found in sorted(paths):
        info = fs.info(found)
        file_uri = _full_uri(fs, found)
        if isinstance(fs, LocalFileSystem):
            tag = "sha256:" + storage.sha256_uri(file_uri)
        else:
            # Object stores give a content tag without reading the bytes.
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            tag = f"etag:{etag}" if etag else "sha256:" + storage.sha256_uri(file_uri)
        files.append({"uri": file_uri, "size": int(info.get("size") or 0), "content": tag})
    return files



def location_reachable(uri: str) -> bool:
    """Whether the place a data URI points into exists: its bucket on an object store, its parent folder
    locally. A watcher may wait on an empty or not-yet-created folder there, never on a mistyped root."""
    fs, path = storage.get_fs(uri)
    path = path.rstrip("/")
    if not isinstance(fs, LocalFileSystem):
        with storage.guarded(uri):
            return bool(fs.exists(path.split("/", 1)[0]))
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    while GLOB_CHARS & set(parent):
        parent = parent.rsplit("/", 1)[0] if "/" in parent else "."
    return bool(fs.isdir(parent or "/"))


DATA_ROOTS_ENV = "TRAINPIPE_DATA_ROOTS"


def data_roots() -> list[str]:
    """The roots this worker may read data under (TRAINPIPE_DATA_ROOTS: comma-separated local folders or
    s3:// prefixes, set in a pool's job variables); empty: no restriction (a local CLI run)."""
    return [normalize_location(r.strip()) for r in os.environ.get(DATA_ROOTS_ENV, "").split(",") if r.strip()]


def normalize_location(uri: str) -> str:
    """A comparable form: object-store URIs as scheme://bucket/key with no `.` or `..` segments, local paths
    absolute with symlinks resolved; folders end with '/'."""
    if "://" in uri and not uri.startswith("file://"):
        scheme, rest = uri.split("://", 1)
        parts = [p for p in rest.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise OutsideDataRoots(f"{uri}: '..' is not allowed in an object-store data URI")
        return f"{scheme}://{'/'.join(parts)}" + ("/" if uri.endswith("/") or len(parts) == 1 else "")
    path = os.path.realpath(uri[len("file://"):] if uri.startswith("file://") else uri)
    return path + "/" if os.path.isdir(path) else path


def check_data_roots(uri: str, roots: list[str]) -> None:
    """Fail, before anything is read, when `uri` (or the fixed part of a glob) is outside every allowed root."""
    if not roots:
        return
    cut = min((uri.find(c) for c in GLOB_CHARS if c in uri), default=-1)  # a glob: its fixed folder
    fixed = uri if cut < 0 else uri[:cut].rsplit("/", 1)[0] + "/"
    where = normalize_location(fixed)
    inside = any(where == root.rstrip("/") or where.startswith(root if root.endswith("/") else root + "/")
                 for root in roots)
    if not inside:
        raise OutsideDataRoots(f"{uri}: outside the data roots this worker allows ({DATA_ROOTS_ENV}: "
                               f"{', '.join(roots)}); nothing was read")


def resolve_sources(data: DataSpec) -> list[dict[str, Any]]:
    """Every input file of the spec, each with its format, size and content tag; with TRAINPIPE_DATA_ROOTS set,
    every URI and every file it lists (symlinks resolved) must lie under one of those roots."""
    roots = data_roots()
    for uri in data.uris:
        check_data_roots(uri, roots)
    files: dict[str, dict[str, Any]] = {}
    for uri in data.uris:
        for item in list_source_files(uri):
            check_data_roots(item["uri"], roots)  # a symlink inside a root may point out of it
            fmt = data.format or infer_format(item["uri"])
            files[item["uri"]] = {**item, "format": fmt}
    return [files[key] for key in sorted(files)]



def sources_fingerprint(files: list[dict[str, Any]]) -> str:
    """One hash over the input files' URIs, sizes and content tags."""
    blob = json.dumps([[f["uri"], f["size"], f["content"], f["format"]] for f in files], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()



def read_file(file: dict[str, Any], data: DataSpec, as_text: tuple[str, ...] = ()) -> pl.DataFrame:
    """Read one input file into a frame; a parse failure names the file. `as_text`: CSV columns read as text."""
    uri, fmt = file["uri"], file["format"]
    fs, path = storage.get_fs(uri)
    try:
        with _opened(fs, path, uri) as handle:
            if fmt == "csv":
                content = handle.read()
                check_short_rows(file, data, content)
                return pl.read_csv(
                    content,
                    separator=data.separator,
                    null_values=data.null_values,
                    infer_schema_length=10_000,
                    try_parse_dates=True,
                    schema_overrides={name: pl.String for name in as_text} or None,
                )
            if fmt == "parquet":
                return pl.read_parquet(handle)
            content = handle.read()
            if content.lstrip()[:1] == b"[":
                return pl.read_json(io.BytesIO(content), infer_schema_length=10_000)  # a JSON array of records
            return pl.read_ndjson(io.BytesIO(content), infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError) as error:
        raise _read_error(file, error) from None



@contextlib.contextmanager
def _opened(fs: Any, path: str, uri: str) -> Iterator[Any]:
    """A local file as a stream; a remote one read whole first (s3fs retries a broken-off body), so a
    store failure surfaces as one (a StorageError naming the URI), never as a parse error."""
    if isinstance(fs, LocalFileSystem):
        with fs.open(path, "rb", compression="infer") as handle:
            yield handle
        return
    with storage.guarded(uri), fs.open(path, "rb", compression="infer") as handle:
        content = handle.read()
    yield io.BytesIO(content)


def _read_error(file: dict[str, Any], error: BaseException, where: str = "") -> DataError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DataError(f"cannot read {file['uri']} as {file['format']}: {message}{where}")


def _ragged_row(file: dict[str, Any], data: DataSpec) -> str:
    """Where a CSV first has a row with another number of fields than its header (polars does not say)."""
    found = _first_ragged(file, data)
    return f" (data row {found[0]} has {found[1]} fields, the header {found[2]})" if found else ""


def _first_ragged(file: dict[str, Any], data: DataSpec) -> tuple[int, int, int] | None:
    """(data row, its fields, the header's fields) of the first non-blank row that differs from the header."""
    fs, path = storage.get_fs(file["uri"])
    with storage.guarded(file["uri"]), fs.open(path, "rt", compression="infer", encoding="utf-8",
                                               errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter=data.separator)
        width = len(next(rows, []))
        for number, row in enumerate(rows, start=1):
            if row and len(row) != width:
                return number, len(row), width
    return None


def check_short_rows(file: dict[str, Any], data: DataSpec, source: Any) -> None:
    """Fail on a CSV row with fewer fields than the header: polars reads the missing fields as nulls without a
    word, which would train on (or drop for a null target) a row that is broken. A quick count of separators
    per line finds candidates; only then is the file parsed properly (quoted separators, quoted newlines)."""
    options = {"has_header": False, "separator": "\x1f", "quote_char": None, "new_columns": ["line"],
               "schema_overrides": {"line": pl.String}, "infer_schema": False}
    try:  # a path is scanned in streaming batches, so a file larger than memory is checked too
        lines = pl.scan_csv(source, **options) if isinstance(source, str) else pl.read_csv(source, **options).lazy()
        line = pl.col("line")
        counts = line.str.count_matches(data.separator, literal=True).fill_null(0)
        # blank: nothing but the line end; a line of spaces is a row with too few fields (polars would read the
        # spaces as the first column's value and the rest as nulls)
        nonblank = line.str.strip_chars("\r").str.len_bytes().fill_null(0) > 0
        # the header's own count is the most, unless quoted separators disagree: then the exact parse decides
        found = lines.select(counts.first().alias("header"), counts.filter(nonblank).min().alias("least"))
        header, least = found.collect(engine="streaming").row(0)
    except (pl.exceptions.PolarsError, ValueError, UnicodeDecodeError):
        return  # unreadable as lines: the real read names the problem
    if header is None or least is None or least >= header:
        return
    found = _first_ragged(file, data)
    if found is not None and found[1] < found[2]:
        raise DataError(f"{file['uri']}: data row {found[0]} has {found[1]} fields, the header {found[2]}: a row "
                        "with too few fields (polars would read the missing ones as nulls)")



def scan_file(file: dict[str, Any], data: DataSpec, as_text: tuple[str, ...] = ()) -> pl.LazyFrame:
    """A lazy scan of a local, uncompressed file; other files are read through fsspec."""
    scan = _scan_file(file, data, as_text)
    return scan.pipe(without_blank_lines) if file["format"] == "csv" else scan


def without_blank_lines(scan: pl.LazyFrame) -> pl.LazyFrame:
    """A CSV's rows without those that hold no value at all: polars reads a blank line (between rows, at the
    end, `\r\n` or not) as a row of nulls, which would become a null-target row to drop, or a row to predict.
    A line of separators only (`,,`) holds no value either and goes too."""
    return scan.filter(~pl.all_horizontal(pl.all().is_null()))


def scanned_in_place(file: dict[str, Any]) -> Optional[str]:
    """The local path of a file polars scans where it lies (local and not compressed); None for one read through
    fsspec first."""
    fs, path = storage.get_fs(file["uri"])
    if not isinstance(fs, LocalFileSystem) or path.lower().endswith((".gz", ".zst", ".bz2", ".json")):
        return None
    return path


def _scan_file(file: dict[str, Any], data: DataSpec, as_text: tuple[str, ...] = ()) -> pl.LazyFrame:
    fmt = file["format"]
    if fmt == "csv":
        check_header(file, data)
    path = scanned_in_place(file)
    if path is None:
        return read_file(file, data, as_text).lazy()
    if fmt == "csv" and not as_text:  # checked once, not again for a re-scan with text columns
        check_short_rows(file, data, path)
    try:
        if fmt == "csv":
            return pl.scan_csv(path, separator=data.separator, null_values=data.null_values,
                               infer_schema_length=10_000, try_parse_dates=True,
                               schema_overrides={name: pl.String for name in as_text} or None)
        if fmt == "parquet":
            return pl.scan_parquet(path)
        return pl.scan_ndjson(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        raise _read_error(file, error) from None



def load_files(files: list[dict[str, Any]], data: DataSpec, notes: list[str] | None = None) -> pl.DataFrame:
    """Scan every input, stack them (columns missing in a file become nulls, types widen), collect once.

    When the combined read fails, each file is read alone to name the one at fault. What was read
    differently from the guess (dates in mixed formats read as text) is appended to `notes`.
    """
    scans = [scan_file(f, data) for f in files]
    try:
        plan = scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal_relaxed")
        return plan.collect()
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        frames = [_collect_alone(file, scan, data, notes) for file, scan in zip(files, scans, strict=True)]
        try:
            return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
        except (pl.exceptions.PolarsError, ValueError):
            raise DataError(f"files cannot be stacked ({', '.join(f['uri'] for f in files)}): {error}") from None


# polars' message when a column guessed as a date/time from its first rows holds another format further down.
_DATE_MISS = re.compile(r"could not parse `[^`]*` as dtype `(?:date|datetime|time)[^`]*` at column '([^']+)'")


def _collect_alone(file: dict[str, Any], scan: pl.LazyFrame, data: DataSpec, notes: list[str] | None) -> pl.DataFrame:
    """Read one file alone; a CSV column whose dates come in more than one format is read as text and noted."""
    as_text: tuple[str, ...] = ()
    while True:
        try:
            frame = scan.collect()
            break
        except (pl.exceptions.PolarsError, OSError, ValueError) as error:
            found = _DATE_MISS.search(str(error))
            if file["format"] == "csv" and "more fields" in str(error):
                raise _read_error(file, error, _ragged_row(file, data)) from None
            if file["format"] != "csv" or not found or found.group(1) in as_text or len(as_text) >= 100:
                raise _read_error(file, error) from None
            as_text += (found.group(1),)
            scan = scan_file(file, data, as_text)
    if as_text and notes is not None:
        notes.append(f"{file['uri']}: column(s) {', '.join(repr(c) for c in as_text)} hold dates in more than one "
                     "format; read as text")
    return frame


def check_header(file: dict[str, Any], data: DataSpec) -> None:
    """Fail on a CSV header naming a column twice (polars would rename one silently and train on both) or with
    spaces around a name (polars keeps them: `species ` is not the target `species`)."""
    fs, path = storage.get_fs(file["uri"])
    with storage.guarded(file["uri"]), fs.open(path, "rb", compression="infer") as handle:
        first = handle.readline()  # one block, not the whole object, on a remote store
    # polars drops a UTF-8 byte-order mark before the first name; so does this check
    names = next(csv.reader([first.decode("utf-8-sig", errors="replace").rstrip("\r\n")],
                            delimiter=data.separator), [])
    padded = [name for name in names if name != name.strip()]
    if padded:
        listed = ", ".join(repr(n) for n in padded)
        raise DataError(f"{file['uri']}: column name(s) {listed} in the header have spaces around them (polars "
                        "keeps them, so a spec naming the column would not find it); remove the spaces from the header")
    seen: set[str] = set()
    twice = [name for name in names if name in seen or seen.add(name)]
    if twice:
        listed = ", ".join(repr(n.strip()) for n in dict.fromkeys(twice))
        raise DataError(f"{file['uri']}: duplicate column name(s) {listed} in the header; rename them so each "
                        "column has one name")


def recorded_inputs(manifest: dict[str, Any], artifacts: str, source: str) -> tuple[Any, list[dict[str, Any]]]:
    """The spec a version was trained with (in another artifact store) and its input files, found again.

    The spec's own URIs are tried first; when they name no data here (relative paths from another
    working directory), the absolute URIs the manifest recorded are tried. Any other error, or both
    failing, surfaces with what was tried.
    """
    from trainpipe.spec import parse_spec

    spec = parse_spec({**manifest["spec"], "artifacts": artifacts}, source=source)
    try:
        return spec, resolve_sources(spec.data)
    except DataError as first:
        recorded = [s["uri"] for s in manifest["data"]["sources"]]
        if recorded == list(spec.data.uris):
            raise
        spec = parse_spec({**manifest["spec"], "data": {**manifest["spec"]["data"], "uris": recorded},
                           "artifacts": artifacts}, source=source)
        try:
            return spec, resolve_sources(spec.data)
        except DataError as second:
            raise DataError(f"the training data of {source} is not here: {first}; and at the recorded "
                            f"URIs: {second}") from None
