"""Runs the tuning subflow in its own OS process (used by test_tune_postgres.py).

    python tests/integration/tune_worker.py SPEC_JSON MATRICES_JSON OUT_JSON

With `TRAINPIPE_TEST_MEET=N` in the environment, this process's first trial waits (up to two
minutes) until the shared study holds at least N trials, so two workers are sure to run at the
same time however differently their interpreters and Prefect clients start: without it, one
process can finish every trial of a small study before the other asks its first.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tasks.tune.trial  # noqa: E402
from flows.tune import tuning_subflow  # noqa: E402
from trainpipe.results import Matrices  # noqa: E402
from trainpipe.spec import TrainSpec  # noqa: E402


def meet_before_first_trial(study_size: int, wait_seconds: float = 120.0) -> None:
    """Wrap run_trial so the first trial of this process starts once the study has `study_size` trials."""
    real_run_trial = tasks.tune.trial.run_trial
    met = threading.Event()

    @functools.wraps(real_run_trial)
    def run_trial(context, trial, params, history):
        deadline = time.monotonic() + wait_seconds
        while not met.is_set() and time.monotonic() < deadline:
            if len(context.study.get_trials(deepcopy=False)) >= study_size:
                met.set()
            else:
                time.sleep(0.05)
        return real_run_trial(context, trial, params, history)

    tasks.tune.trial.run_trial = run_trial


def main(spec_path: str, matrices_path: str, out_path: str) -> None:
    if os.environ.get("TRAINPIPE_TEST_MEET"):
        meet_before_first_trial(int(os.environ["TRAINPIPE_TEST_MEET"]))
    spec = TrainSpec.model_validate_json(Path(spec_path).read_text())
    matrices = Matrices.model_validate_json(Path(matrices_path).read_text())
    result = tuning_subflow(spec.tuning.parallelism)(spec, matrices, "binary", None)
    Path(out_path).write_text(result.model_dump_json())


if __name__ == "__main__":
    main(*sys.argv[1:4])
