"""Console and logging plumbing: Prefect defaults for an embedded run, quiet expected errors, stage lines."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from trainpipe.errors import TrainpipeError


def _api_unreachable(error: BaseException) -> bool:
    """A connection failure of an HTTP client (the Prefect API's, when Prefect logs it), which the CLI explains."""
    import httpx

    return isinstance(error, httpx.TransportError)


class _QuietExpectedErrors(logging.Filter):
    """Drop Prefect's tracebacks for errors trainpipe explains itself (bad spec, data, contract, an unreachable
    Prefect API)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (isinstance(record.exc_info[1], TrainpipeError) or _api_unreachable(record.exc_info[1])):
            record.exc_info, record.exc_text = None, None
        return True



class _ExpectedErrorLines(logging.Filter):
    """Keeps Prefect's console free of the error lines for a failure the CLI itself explains last."""

    names = tuple(cls.__name__ for cls in TrainpipeError.__subclasses__())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message for name in self.names)



def prepare_prefect() -> None:
    """Offline-friendly defaults for an embedded (ephemeral) Prefect run, unless already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The embedded server can need more than Prefect's 20 s default to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # The embedded server is a child process that inherits this environment and writes its log to the user's
    # stderr. When a run ends at once (bad data, a stored version), the server is stopped while its services still
    # flush, and they log the cancellation as an error with a traceback under trainpipe's own clear error. Only
    # the server's own loggers read this setting; the run's outcome and errors reach the user from this process.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    quiet = _QuietExpectedErrors()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(quiet)



HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextlib.contextmanager
def foreground_run(api: Any = None) -> Any:
    """A flow run in this process, in front of the user who started it: Prefect's flow-run heartbeats off, unless
    the environment sets their frequency. `api` (cli.embedded.prefect_api's) is waited for first.

    Prefect 3.9's heartbeat thread sleeps in 1 s steps and every flow run joins it at its end, so a run in this
    process ends up to 1 s late (about 1 s for a short one, such as a re-run that finds its version stored). A
    heartbeat only matters to an automation that marks runs whose heartbeats stop as crashed; a run started here
    has its user watching the process, and runs started by a worker from a deployment keep Prefect's default."""
    if api is not None:
        api.wait()
    if any(os.environ.get(name) for name in HEARTBEAT_SETTINGS):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


class _StageLines(logging.Handler):
    """Prints one line per finished stage, from Prefect's own task-run log records."""

    def __init__(self, console: Any):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        name = getattr(record, "task_name", None)
        if not name or not message.startswith("Finished in state"):
            return
        if "Cached" in message:
            self.console.print(f"  [cyan]cached[/]  {name}")
        elif "Failed" in message or "Crashed" in message:
            self.console.print(f"  [red]failed[/]  {name}")
        else:
            self.console.print(f"  [green]done[/]    {name}")



@contextlib.contextmanager
def stage_progress(title: str) -> Any:
    """A spinner and a line per stage on stderr.

    Prefect's INFO lines still reach its server (the run page shows them); the console
    shows only warnings and errors from here on, until the command exits.
    """
    from rich.console import Console

    console = Console(stderr=True)
    for handler in logging.getLogger().handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.addFilter(_ExpectedErrorLines())
    lines = _StageLines(console)
    task_logger = logging.getLogger("prefect.task_runs")
    task_logger.setLevel(logging.INFO)  # the stage lines come from its INFO records
    task_logger.addHandler(lines)
    try:
        with console.status(title):
            yield
    finally:
        task_logger.removeHandler(lines)
