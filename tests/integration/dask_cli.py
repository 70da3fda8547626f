"""A real Dask cluster from the `dask` command line: one scheduler and N worker processes on 127.0.0.1.

Used by the dask integration tests and by benchmarks/dask_engine.py. Each process runs in its own session so
that teardown can stop it (and the worker a nanny started) by process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent


class CliCluster:
    """A started scheduler and its workers; `address` is the scheduler's, `workers` the worker processes."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.scheduler_file = folder / "scheduler.json"
        self.scheduler: Optional[subprocess.Popen] = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.folder / log, "wb") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen([str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=str(self.folder), start_new_session=True)

    def start_scheduler(self, timeout_s: float = 60) -> None:
        self.scheduler = self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(self.scheduler_file),
                                      # a safety net should teardown never run (the test process killed)
                                      "--idle-timeout", "300"], "scheduler.log")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited {self.scheduler.returncode}: {self.log('scheduler.log')}")
            if self.scheduler_file.exists():
                try:
                    self.address = json.loads(self.scheduler_file.read_text())["address"]
                    return
                except (ValueError, KeyError):
                    pass  # written but not complete yet
            time.sleep(0.2)
        raise RuntimeError(f"no scheduler file after {timeout_s:.0f} s: {self.log('scheduler.log')}")

    def add_worker(self, name: str, memory_limit: str, nthreads: int = 1) -> subprocess.Popen:
        worker = self._spawn(["worker", self.address, "--name", name, "--nthreads", str(nthreads),
                              "--memory-limit", memory_limit, "--no-dashboard", "--host", "127.0.0.1",
                              "--death-timeout", "60",
                              "--local-directory", str(self.folder / name)], f"{name}.log")
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, n: int, timeout_s: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout_s) as client:
            client.wait_for_workers(n, timeout=timeout_s)

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """Workers first (so they do not retry a gone scheduler), then the scheduler: SIGTERM, then SIGKILL."""
        for group in (self.workers, [self.scheduler] if self.scheduler else []):
            for proc in group:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@contextmanager
def cli_cluster(n_workers: int, memory_limit: str, nthreads: int = 1, folder: Optional[Path] = None,
                env: Optional[dict[str, str]] = None) -> Iterator[CliCluster]:
    """`dask scheduler` and `n_workers` × `dask worker --nthreads N --memory-limit M`, stopped on exit; `env` is
    added to every process's environment."""
    base = Path(folder or tempfile.mkdtemp(prefix="dask-cli-"))
    base.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    cluster = CliCluster(base, env)
    try:
        cluster.start_scheduler()
        for i in range(n_workers):
            cluster.add_worker(f"w{i}", memory_limit, nthreads)
        cluster.wait_for_workers(n_workers)
        yield cluster
    finally:
        cluster.stop()
