"""Runs the tuning subflow in its own OS process (used by test_tune_postgres.py).

    python tests/integration/tune_worker.py SPEC_JSON MATRICES_JSON OUT_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.tune import tuning_subflow  # noqa: E402
from trainpipe.spec import TrainSpec  # noqa: E402


def main(spec_path: str, matrices_path: str, out_path: str) -> None:
    spec = TrainSpec.model_validate_json(Path(spec_path).read_text())
    matrices = json.loads(Path(matrices_path).read_text())
    result = tuning_subflow(spec.tuning.parallelism)(spec, matrices, "binary", None)
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
