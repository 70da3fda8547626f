"""Promote: record the gate's verdict and move `champion` by compare-and-swap on the audit log."""

from __future__ import annotations

from typing import Any, Optional

from prefect import task

from tasks.gate import HoldoutInputs, run_gate
from trainpipe import audit, registry
from trainpipe.results import Evaluation, Promotion, RunContext, Stored, Verdict
from trainpipe.spec import PromotionSpec


def promote_version(
    artifacts: str, name: str, version: int, verdict: dict[str, Any], spec: PromotionSpec, seed: int,
    regate: Any, fields: dict[str, Any],
) -> dict[str, Any]:
    """Record the verdict, then move `champion` to `version` if it was promoted, as a compare-and-swap:
    when the champion changed since the verdict (another run promoted meanwhile), the gate runs again
    against the new champion before anything moves. Returns the final verdict with `moved`."""
    latest = {"verdict": verdict}

    def decide(current: Optional[int], records: list[dict[str, Any]]) -> tuple[Optional[int], dict[str, Any]]:
        if current == version:
            latest["verdict"] = {**latest["verdict"], "promote": False,
                                 "reason": f"v{version} is already champion"}
            return None, latest["verdict"]
        if current != latest["verdict"]["champion_version"] and spec.policy == "gate":
            latest["verdict"] = regate(current)
        return (version if latest["verdict"]["promote"] else None), latest["verdict"]

    audit.append(artifacts, name, "gate_verdict", {**fields, "version": version, "verdict": verdict})
    move, final = audit.move_alias_if(artifacts, name, audit.CHAMPION, decide,
                                      {**fields, "kind": "gate", "reason": verdict["reason"]})
    if final is not verdict and final.get("champion_version") != verdict["champion_version"]:
        audit.append(artifacts, name, "gate_verdict", {**fields, "version": version, "verdict": final,
                                                       "regated": True})
    return {**final, "moved": move is not None, "audit_seq": move["seq"] if move else None}



@task(name="promote")
def promote_task(run: RunContext, evaluation: Evaluation, stored: Stored, verdict: Verdict) -> Promotion:
    """Record the verdict and move the champion; nothing at all for a version that already has its verdict.

    No retries: a half-done attempt must not log its verdict twice (the CAS itself never needs one).
    """
    artifacts, spec = run.artifacts, run.spec
    if stored.reused:
        current = registry.champion(artifacts, spec.name)
        return Promotion(**{**verdict.model_dump(), "promote": current == stored.version, "moved": False,
                            "audit_seq": None,
                            "reason": f"identical to the stored v{stored.version}: nothing new to promote "
                                      f"(champion is {'v' + str(current) if current else 'none'})"})
    cache: dict[str, HoldoutInputs] = {}

    def regate(current: Optional[int]) -> dict[str, Any]:
        if "inputs" not in cache:
            cache["inputs"] = HoldoutInputs(evaluation.holdout_uri, run.parts.uris["test"])
        return run_gate(artifacts, spec.name, spec.promotion, spec.seed, cache["inputs"], run.validated.task,
                        run.validated.classes, current)

    fields = {"flow_run_id": _flow_run_id(), "trigger": run.trigger}
    return Promotion(**promote_version(artifacts, spec.name, stored.version, verdict.model_dump(), spec.promotion,
                                       spec.seed, regate, fields))


def _flow_run_id() -> Optional[str]:
    from prefect.runtime import flow_run

    return flow_run.id
