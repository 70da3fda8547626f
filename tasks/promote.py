"""Promote: record the gate's verdict and move `champion` by compare-and-swap on the audit log."""

from __future__ import annotations

from typing import Any, Optional

from prefect import task

from trainpipe import registry
from trainpipe.promotion import HoldoutInputs, promote_version, run_gate
from trainpipe.results import Evaluation, Promotion, RunContext, Stored, Verdict


@task(name="promote")
def promote_task(run: RunContext, evaluation: Evaluation, stored: Stored, verdict: Verdict) -> Promotion:
    """Record the verdict and move the champion; nothing at all for a version that already has its verdict.

    No retries: a half-done attempt must not log its verdict twice (the CAS itself never needs one).
    """
    artifacts, spec = run.artifacts, run.spec
    if stored.reused:
        return Promotion.unchanged(verdict.model_dump(), stored.version, registry.champion(artifacts, spec.name))
    cache: dict[str, HoldoutInputs] = {}

    def regate(current: Optional[int]) -> dict[str, Any]:
        if "inputs" not in cache:
            cache["inputs"] = HoldoutInputs.of(run, evaluation)
        return run_gate(artifacts, spec.name, spec.promotion, spec.seed, cache["inputs"], run.validated.task_type,
                        run.validated.classes, current)

    fields = {"flow_run_id": _flow_run_id(), "trigger": run.trigger}
    return Promotion(**promote_version(artifacts, spec.name, stored.version, verdict.model_dump(), spec.promotion,
                                       spec.seed, regate, fields))


def _flow_run_id() -> Optional[str]:
    from prefect.runtime import flow_run

    return flow_run.id
