"""Artifact-store I/O through fsspec: local paths, file:// and s3:// alike.

Writes are atomic per object: local files go to a temporary name and are renamed;
an S3 PUT is atomic by itself. `create_only` is the building block for version
allocation: it fails if the object already exists (O_EXCL locally, If-None-Match on S3).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import uuid
from typing import Any

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem


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
    return options


def get_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding `uri` and the path within it."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    return fs, path


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
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = get_fs(uri)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes) -> str:
    """Write an object so that readers see either nothing or all of it; returns its sha256."""
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    else:
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
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
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
    """Write a frame as one Parquet object, atomically; returns the sha256 of its bytes."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str) -> pl.DataFrame:
    fs, path = get_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return pl.read_parquet(path)
    with fs.open(path, "rb") as handle:
        return pl.read_parquet(handle)


def list_dir(uri: str) -> list[str]:
    """Names directly under a folder/prefix; empty when it does not exist."""
    fs, path = get_fs(uri)
    fs.invalidate_cache(path)
    try:
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
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
