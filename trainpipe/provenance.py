"""What produced a result: code version, package versions, stage cache keys."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_PACKAGES = ("trainpipe", "tasks", "flows", "cli")
# What a stage's outputs can depend on: the library, the stages and the flows that call them. The CLI only turns
# options into the spec (which the keys hold), so a CLI-only change keeps every cached stage; the code version a
# manifest records still covers every package.
STAGE_CODE_PACKAGES = ("trainpipe", "tasks", "flows")
TRACKED_PACKAGES = ("trainpipe", "prefect", "polars", "xgboost", "pandera", "optuna", "s3fs", "numpy", "pydantic")


@functools.lru_cache(maxsize=4)
def source_hash(packages: tuple[str, ...] = SOURCE_PACKAGES) -> str:
    """sha256 over the Python sources (path and bytes) of these packages of the project, so any change shows."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Git commit (when the code is a checkout), whether the tree was dirty, and the source hash."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PACKAGES)
        dirty = bool(status) if status is not None else None
    return {"git_commit": commit, "git_dirty": dirty, "source_sha256": source_hash()}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def canonical(value: Any) -> Any:
    """A JSON-ready form of a cache input: models dumped, stage outputs reduced to their fingerprint."""
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(mode="json"))
    if isinstance(value, dict):
        if "fingerprint" in value:
            return {"fingerprint": value["fingerprint"]}
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """Cache key of a stage run: its name, the code version and its canonical inputs."""
    payload = {"stage": stage, "code": source_hash(STAGE_CODE_PACKAGES), "inputs": canonical(inputs)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def dependency_set() -> dict[str, Any]:
    """The pinned dependency set the project installs with: sha256 of constraints.txt and its pins."""
    path = PROJECT_ROOT / "constraints.txt"
    if not path.exists():
        return {"file": None, "sha256": None, "pins": []}
    data = path.read_bytes()
    pins = [line.strip() for line in data.decode().splitlines() if line.strip() and not line.startswith("#")]
    return {"file": "constraints.txt", "sha256": hashlib.sha256(data).hexdigest(), "pins": pins}


def now_iso(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601, for records and manifests."""
    return dt.datetime.now(dt.UTC).isoformat(timespec=timespec)
