"""Artifact-store I/O through fsspec: local paths, file:// and s3:// alike.

Writes are atomic per object: local files go to a temporary name and are renamed;
an S3 PUT is atomic by itself. `create_only` is the building block for version
allocation: it fails if the object already exists (O_EXCL locally, If-None-Match on S3).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import copy
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from trainpipe.errors import StorageError

# Bounded S3 retries (README "Failure behaviour"): botocore's standard mode sends each request up to
# 3 times (max_attempts counts the retries), retrying connection errors, throttling (SlowDown, 429)
# and 5xx after a random 0-1 s, then 0-2 s; s3fs makes up to 2 tries of a call whose response body
# broke off (or that was throttled). Connect and read timeouts keep a silent endpoint from hanging a
# stage. The stage's own retries (tasks/common.py) come on top.
S3_CLIENT_CONFIG: dict[str, Any] = {"retries": {"max_attempts": 2, "mode": "standard"},
                                    "connect_timeout": 5, "read_timeout": 30}
S3FS_RETRIES = 2

def storage_options(uri: str) -> dict[str, Any]:
    """Options for the filesystem of `uri`, from the environment (never from a spec file).

    `TRAINPIPE_STORAGE_OPTIONS` may hold a JSON object; s3fs reads credentials and
    `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` itself.
    """
    raw = os.environ.get("TRAINPIPE_STORAGE_OPTIONS")
    options: dict[str, Any] = json.loads(raw) if raw else {}
    if uri.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options:
            options["endpoint_url"] = endpoint
        # a deep copy: botocore adjusts the retries dict it is given in place (max_attempts 2 became 3 after the
        # first client, and so on for every client after it)
        options["config_kwargs"] = {**copy.deepcopy(S3_CLIENT_CONFIG), **options.get("config_kwargs", {})}
    return options


def get_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding `uri` and the path within it."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    if fs.protocol and "s3" in fs.protocol:
        fs.retries = S3FS_RETRIES  # s3fs takes its own retry count only as an attribute (default 5)
    return fs, path


# --- store failures: transient or not, and a message naming the URI --------------------------------

TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
                   "RequestTimeout", "InternalError", "ServiceUnavailable", "BadGateway", "GatewayTimeout",
                   "500", "502", "503", "504"}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
                "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (s3fs turns botocore's errors into OSErrors with the original as cause)."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failure types of botocore and aiohttp (imported only when S3 is in use)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        from botocore import exceptions as boto

        found += [boto.ConnectionError, boto.HTTPClientError, boto.IncompleteReadError]
    with contextlib.suppress(ImportError):
        import aiohttp

        found += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError]
    return tuple(found)


def classify_error(exc: BaseException) -> Optional[str]:
    """'transient' (connection trouble, throttling, 5xx), 'denied' (no permission or bad credentials),
    'credentials' (none found), or None for anything else (missing keys, bad data, bugs)."""
    for error in _chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return "transient"
            if code in DENIED_CODES or status == 403:
                return "denied"
            return None
        if type(error).__name__ == "NoCredentialsError":
            return "credentials"
        if isinstance(error, _transport_errors()):
            return "transient"
    return "denied" if isinstance(exc, PermissionError) else None


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _endpoint(uri: str) -> str:
    return str(storage_options(uri).get("endpoint_url") or "the provider's default endpoint")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def store_error(exc: BaseException, uri: str) -> Optional[StorageError]:
    """A StorageError naming `uri` and its endpoint for a store failure; None for anything else."""
    if isinstance(exc, StorageError) or not _is_remote(uri):
        return None
    kind = classify_error(exc)
    if kind == "transient":
        return StorageError(f"storage unavailable for {uri} (endpoint {_endpoint(uri)}): {_reason(exc)}",
                            transient=True)
    if kind == "denied":
        bucket = uri.split("://", 1)[1].split("/", 1)[0]
        return StorageError(f"no permission for {uri}: the credentials in use may not access bucket {bucket!r} "
                            f"(endpoint {_endpoint(uri)}): {_reason(exc)}")
    if kind == "credentials":
        return StorageError(f"no credentials for {uri} (endpoint {_endpoint(uri)}): set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, a profile, or an instance role")
    return None


@contextlib.contextmanager
def guarded(uri: str) -> Iterator[None]:
    """Turn store failures inside the block into a StorageError naming `uri`; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        error = store_error(exc, uri)
        if error is None:
            raise
        raise error from exc


def join(uri: str, *parts: str) -> str:
    """Join URI parts with '/', whatever the filesystem."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def normalize_root(uri: str) -> str:
    """An artifact root as an absolute URI: local paths become absolute, remote ones stay."""
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path)
    return uri.rstrip("/")


def exists(uri: str) -> bool:
    fs, path = get_fs(uri)
    fs.invalidate_cache(path)
    with guarded(uri):
        return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = get_fs(uri)
    with guarded(uri):
        return fs.cat_file(path)


@contextlib.contextmanager
def _published(path: str) -> Iterator[str]:
    """A temporary file beside a local `path`, renamed into place when the block ends without an error and
    removed when it raises: a reader sees the whole file or none."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(uri: str, data: bytes) -> str:
    """Write an object so that readers see either nothing or all of it; returns its sha256."""
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        with _published(path) as tmp, open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    else:
        with guarded(uri):
            fs.pipe_file(path, data)
    return sha256_bytes(data)


def create_only(uri: str, data: bytes) -> bool:
    """Write an object only if none exists there; False when it already did."""
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        # Written under a temporary name, then hard-linked into place: link() fails if the name
        # exists, and a reader never sees the object before all of its bytes are there.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    try:
        with guarded(uri):
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        # A retried PUT whose first attempt landed but whose answer was lost meets its own object:
        # the same bytes there mean this writer created it (callers put a unique nonce or timestamp in).
        try:
            with guarded(uri):
                return bool(fs.cat_file(path) == data)
        except FileNotFoundError:  # refused because another writer's PUT of that key is still in flight: theirs
            return False
    return True


def plain_scalar(value: Any) -> Any:
    """A JSON-safe scalar: numpy and polars scalars as Python ones, NaN and infinities as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, so equal values give equal bytes."""
    return (json.dumps(value, sort_keys=True, indent=2, default=str) + "\n").encode()


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, value: Any) -> str:
    return write_bytes(uri, dumps_json(value))


def write_parquet(frame: pl.DataFrame, uri: str) -> str:
    """Write a frame as one Parquet object, atomically; returns the sha256 of its bytes.

    On a local store polars writes straight into a temporary file beside the target, which is hashed, synced
    and renamed into place: no in-memory copy of the encoded bytes (a BytesIO and its `getvalue()` held
    two). A remote object is encoded in memory and sent in one request, as before."""
    fs, path = get_fs(uri)
    if not isinstance(fs, LocalFileSystem):
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        return write_bytes(uri, buffer.getvalue())
    with _published(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        return file_sha256(tmp, sync=True)


def is_local(uri: str) -> bool:
    return isinstance(get_fs(uri)[0], LocalFileSystem)


def copy_local_file(source_path: str, uri: str, check: Optional[Callable[[str, str], None]] = None) -> str:
    """Copy a local file to a local URI atomically, hashing its bytes on the way; returns their sha256.

    The copy is written to a temporary file beside the target, synced, passed to `check(path, sha256)` (which may
    read it and raise: then nothing is published) and renamed into place."""
    fs, path = get_fs(uri)
    if not isinstance(fs, LocalFileSystem):
        raise ValueError(f"copy_local_file writes to a local store, not {uri}")
    digest = hashlib.sha256()
    with _published(path) as tmp:
        with open(source_path, "rb") as source, open(tmp, "wb") as target:
            while block := source.read(1 << 22):
                digest.update(block)
                target.write(block)
            target.flush()
            os.fsync(target.fileno())
        if check is not None:
            check(tmp, digest.hexdigest())
    return digest.hexdigest()


def file_sha256(path: str, chunk: int = 1 << 22, sync: bool = False) -> str:
    """The sha256 of a local file's bytes, read in chunks; `sync`: fsync it too (before it is renamed into place)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def read_parquet(uri: str) -> pl.DataFrame:
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return pl.read_parquet(path)
    # Read whole (s3fs retries a broken-off body), then parsed: a store failure never looks like bad data.
    return pl.read_parquet(io.BytesIO(read_bytes(uri)))


def list_dir(uri: str) -> list[str]:
    """Names directly under a folder/prefix; empty when it does not exist."""
    fs, path = get_fs(uri)
    fs.invalidate_cache(path)
    try:
        with guarded(uri):
            entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(os.path.basename(entry.rstrip("/")) for entry in entries)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_uri(uri: str, chunk: int = 1 << 22) -> str:
    """Hash an object's bytes in chunks."""
    fs, path = get_fs(uri)
    digest = hashlib.sha256()
    with guarded(uri), fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
