"""Gate: judge the new model against the champion of the moment (or the trivial baseline); the rule is
`trainpipe.promotion`."""

from __future__ import annotations

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from trainpipe import registry
from trainpipe.promotion import HoldoutInputs, run_gate
from trainpipe.results import Evaluation, RunContext, Verdict


@task(name="gate", **TRANSIENT_RETRIES)
def gate_task(run: RunContext, evaluation: Evaluation) -> Verdict:
    """Judge the new model against the champion of the moment (or the baseline), on evaluate's holdout scores."""
    artifacts, spec = run.artifacts, run.spec
    inputs = HoldoutInputs.of(run, evaluation)
    champion = registry.champion(artifacts, spec.name)
    return Verdict(**run_gate(artifacts, spec.name, spec.promotion, spec.seed, inputs, run.validated.task_type,
                              run.validated.classes, champion))
