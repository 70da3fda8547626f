"""Flow-run state hooks shared by deployable flows."""

from __future__ import annotations

from typing import Any

from trainpipe import storage
from trainpipe.spec import default_artifacts_uri


def mark_failed_trigger(flow: Any, flow_run: Any, state: Any) -> None:
    """On a failed or crashed event-triggered run, leave a marker so the watcher asks for it again."""
    from tasks.watch import record_trigger_failure

    parameters = flow_run.parameters or {}
    trigger = parameters.get("trigger")
    if not isinstance(trigger, dict):
        return
    spec = parameters.get("spec")
    raw = spec.get("artifacts") if isinstance(spec, dict) else getattr(spec, "artifacts", None)
    record_trigger_failure(storage.normalize_root(raw or default_artifacts_uri()), trigger, state.name,
                           state.message or "")
