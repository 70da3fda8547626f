"""The embedded Prefect API server of a CLI run, started beside the CLI's own imports instead of inside its first
API call.

With no Prefect API configured, Prefect starts its ephemeral server (`SubprocessASGIServer`) at the first API
call: after the CLI has imported the flow and its stages, and after importing the whole server package into the
CLI's process just to start that child. The CLI starts the same child itself (Prefect 3.9's command line and
environment for it) as soon as it knows that a flow will run, points this process at it, and waits for it only
right before the flow starts: the server's start-up overlaps the CLI's imports, and the CLI never imports the
server. A configured API (`PREFECT_API_URL`, from the environment or a profile), or ephemeral mode turned off,
leaves everything to Prefect.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Optional

from trainpipe.errors import OrchestratorError

# What Prefect 3.9's SubprocessASGIServer sets for its child (the UI off, the API in ephemeral mode: only the
# services meant for an ephemeral server run).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# uvicorn's exit code when it could not start: a port taken meanwhile (another is tried, as Prefect does) or an
# application that failed to start (a database it cannot open), which a new port does not mend
STARTUP_FAILURE_EXIT, PORT_TRIES = 3, 3


def _end_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the CLI dies, even by SIGKILL or the OOM killer, which run no
    exit handler; elsewhere the server is only stopped by the CLI itself."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """One ephemeral Prefect API server in a child process, for this process's flow runs."""

    def __init__(self) -> None:
        self.timeout_s = 20.0  # Prefect's default; prefect_api sets the configured one once settings are read
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self._ready = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the child and return at once (without importing Prefect here)."""
        import importlib.util

        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.origin is not None, "prefect is not installed"
        self.port = free_port()
        site = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
        linux = sys.platform.startswith("linux")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", site, "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **SERVER_ENV}, preexec_fn=_end_with_parent if linux else None)

    def wait(self) -> None:
        """Return once the server answers its health check; a child that cannot bind its port is started again on
        another. Raises OrchestratorError when it exits or does not answer within the start-up timeout."""
        if self._ready:
            return
        deadline = time.monotonic() + self.timeout_s
        tries = 1
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code == STARTUP_FAILURE_EXIT and tries < PORT_TRIES:
                tries += 1
                self.start()
                continue
            if code is not None:
                raise OrchestratorError(f"the embedded Prefect server exited with code {code} before it answered; "
                                        "set PREFECT_SERVER_LOGGING_LEVEL=WARNING to see its log, or point "
                                        "PREFECT_API_URL at a running server")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self._ready = True
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise OrchestratorError(f"the embedded Prefect server did not answer within {self.timeout_s:.0f} s "
                                "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); the machine may be overloaded, "
                                "or point PREFECT_API_URL at a running server")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class _Configured:
    """A configured (or Prefect-managed) API: nothing to start or wait for."""

    def wait(self) -> None:
        return None


# Environment values that turn Prefect's ephemeral mode off (the settings, read later, have the last word).
EPHEMERAL_SWITCHES = ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")


def _environment_names_no_api() -> bool:
    """Whether the environment alone leaves the run without an API (a profile may still name one)."""
    if os.environ.get("PREFECT_API_URL"):
        return False
    return not any(os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")
                   for name in EPHEMERAL_SWITCHES)


@contextlib.contextmanager
def prefect_api() -> Iterator[EmbeddedServer | _Configured]:
    """The Prefect API for this CLI run: an embedded server started now when none is configured (call `wait()`
    right before the first flow call), stopped when the block ends.

    The child is started before Prefect's settings are even imported (0.6 s of the CLI's start) when the
    environment names no API; if the settings then name one (a profile, prefect.toml), that child is stopped
    unused and the configured API is used."""
    early = EmbeddedServer() if _environment_names_no_api() else None
    if early is not None:
        early.start()
    try:
        from prefect.context import _temporary_global_settings_context, get_settings_context
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

        settings = get_current_settings()
    except BaseException:
        if early is not None:
            early.stop()
        raise
    if settings.api.url or not settings.server.ephemeral.enabled:
        if early is not None:
            early.stop()
        yield _Configured()
        return
    server = early or EmbeddedServer()
    if server.process is None:
        server.start()
    server.timeout_s = float(settings.server.ephemeral.startup_timeout_seconds)
    previous = os.environ.get("PREFECT_API_URL")
    # processes the run starts reach the same server
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        # no UI link in the run's log lines: the embedded server serves no UI. The settings are made the process's
        # global ones too, as prefect_test_harness does for its server: Prefect's log and event workers run in
        # threads of their own, outside this context, and would otherwise start an ephemeral server of their own.
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}), \
                _temporary_global_settings_context(get_settings_context()):
            yield server
    finally:
        try:
            drain_workers()  # while the server still answers, as prefect_test_harness does before it stops its own
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            server.stop()


def drain_workers(timeout_s: float = 10.0) -> None:
    """Send the run's queued log lines and events to the server now. Prefect's own ephemeral server is stopped at
    interpreter exit, after these workers have drained; this one stops when the CLI's block ends, before that."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)
