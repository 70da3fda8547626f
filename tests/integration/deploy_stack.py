"""A real deployment stack for tests: Prefect server on loopback, moto's S3 server, pools, deployments, workers.

Built once per test module by `deployment_stack()`; every process it starts is stopped on the
way out, workers before the server, even when set-up fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
from moto_s3 import free_port

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "trainpipe-deploy"
STORE = f"s3://{BUCKET}/store"
LANDING = f"s3://{BUCKET}/landing/penguins/"
BIN = Path(sys.executable).parent


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Stack:
    api_url: str
    ui_url: str
    env: dict[str, str]
    logs: Path
    setup_reports: list[dict[str, Any]] = field(default_factory=list)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def _start(stack: Stack, name: str, *args: str) -> subprocess.Popen:
    handle = open(stack.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(list(args), cwd=ROOT, env=stack.env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stack.processes[name] = proc
    return proc


def _stop(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: flow-run children and the server's uvicorn too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _healthy(url: str, proc: subprocess.Popen, logs: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"prefect server exited {proc.returncode}:\n{(logs / 'server.log').read_text()[-3000:]}")
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def prefect_database() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL for the stack's Prefect server.

    SQLite answered `database is locked` (HTTP 503 on create_flow_run) with a server, two
    workers, triggers and the dashboard busy at once; PostgreSQL is what production uses.
    """
    import uuid

    import psycopg

    name = f"trainpipe_prefect_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def deployment_stack(tmp: Path, pools: tuple[str, ...] = ("cpu", "gpu"),
                     worker_limit: Optional[int] = None) -> Iterator[Stack]:
    """Server, `trainpipe infra setup` (twice), `prefect deploy --all`, one process worker per pool (each
    running at most `worker_limit` flow runs at once when given: `prefect worker start --limit`)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    s3_port, api_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    moto.start()
    # moto's backends live in this process, shared by every server it starts: an earlier stack's bucket and
    # objects would still be there. Each stack starts from an empty S3 (moto's own reset endpoint).
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3_port}/moto-api/reset", method="POST"),
                           timeout=30).close()
    s3 = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}", "AWS_ACCESS_KEY_ID": "testing",
          "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    api_url = f"http://127.0.0.1:{api_port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRAINPIPE_", "AWS_"))}
    env.update(s3)
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "TRAINPIPE_HOME": str(ROOT),
        "TRAINPIPE_ARTIFACTS": STORE,
        "TRAINPIPE_WATCH_URI": LANDING,
    })
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(api_url=api_url, ui_url=f"http://127.0.0.1:{api_port}", env=env, logs=logs)
    saved = {k: os.environ.get(k) for k in s3}
    cleanup = contextlib.ExitStack()
    try:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = cleanup.enter_context(prefect_database())
        os.environ.update(s3)  # this process reads and writes the same bucket
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(endpoint_url=s3["AWS_ENDPOINT_URL_S3"]).mkdir(BUCKET)
        server = _start(stack, "server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                        "--port", str(api_port))
        wait_for(lambda: _healthy(api_url, server, logs), 120, "the Prefect server")
        for _ in range(2):
            done = stack.run(sys.executable, "-m", "trainpipe", "infra", "setup", "--json")
            stack.setup_reports.append(json.loads(done.stdout))
        stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all", timeout=300)
        for pool in pools:
            limit = ("--limit", str(worker_limit)) if worker_limit is not None else ()
            _start(stack, f"worker-{pool}", str(BIN / "prefect"), "worker", "start", "--pool", pool,
                   "--type", "process", "--name", f"worker-{pool}", *limit)
        yield stack
    finally:
        for name, proc in stack.processes.items():
            if name.startswith("worker-"):
                _stop(proc, grace=20)
        if "server" in stack.processes:
            _stop(stack.processes["server"], grace=10)
        moto.stop()
        cleanup.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def flow_runs(client: Any, deployment_name: str) -> list[Any]:
    """Every flow run of a deployment (FLOW/DEPLOYMENT), oldest first."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(deployment_name)
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return sorted(runs, key=lambda r: r.created)


def finished(client: Any, run_id: Any) -> Optional[Any]:
    run = client.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None
