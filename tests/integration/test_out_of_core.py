"""A run on Parquet data larger than a memory limit set for the process completes out of core, with a holdout
metric within tolerance of the same run in memory, where the in-memory path is killed under the same limit
(the CLI, in a cgroup v1 memory group, against the session's Prefect server)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from memlimit import MemoryLimit, supported

pytestmark = pytest.mark.skipif(not supported(), reason="needs root on a cgroup v1 memory hierarchy")

ROWS = 2_000_000
# Measured here (cgroup v1, the session's server, 2026-12-04): at 1M rows the in-memory run now completes under
# 520 MB (Float32 validation and features), so the limit no longer bound there. At 2M rows the in-memory run is
# OOM-killed under 600 MB and completes under 680 MB; the out-of-core run completes under 480 MB (114 s, the
# kernel reclaiming page cache at the limit) and 560 MB (53 s) and is killed under 420 MB. 540 MB leaves 60 MB
# on both sides. Earlier, at 300k rows and 400 MB, the two sides were within 50 MB and the out-of-core run was
# once killed.
LIMIT_BYTES = 540 * 2**20
AUC_TOLERANCE = 0.005  # as benchmarks/out_of_core.py: the external-memory sketch bins page by page
SPEC = """data:
  uris: [{data}]
target: y
xgboost:
  num_boost_round: 20
compute:
  external_memory: "{mode}"
  partition_rows: 100000
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run import synthetic

    return synthetic(tmp_path_factory.mktemp("ooc"), ROWS, "parquet")


def cli_env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    return env


def train(cmd_spec: Path, artifacts: Path, limit: MemoryLimit | None = None, check: bool = True) -> dict:
    cmd = [sys.executable, "-m", "trainpipe", "train", str(cmd_spec), "--artifacts", str(artifacts), "--json"]
    if limit is not None:
        result = limit.run(cmd, env=cli_env(), cwd=str(ROOT), timeout=300)
    else:
        from run import measure

        done = measure(cmd, cli_env())
        result = {"rc": done["rc"], "stdout": json.dumps(done["json"]), "stderr": done["stderr_tail"],
                  "child_peak_rss_bytes": done["rss_mb"] * 2**20}
    if not check:
        return result
    assert result["rc"] == 0, result["stderr"][-3000:]
    return {**result, "summary": json.loads(result["stdout"].strip().splitlines()[-1])}


def test_run_larger_than_its_memory_limit_completes_out_of_core(data: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(data=data, mode="auto"))
    in_memory = tmp_path / "in_memory.yaml"
    in_memory.write_text(SPEC.format(data=data, mode="off"))
    reference = train(spec, tmp_path / "art-memory")
    assert reference["summary"]["memory"]["out_of_core"] is False  # the host has room: in memory
    with MemoryLimit(LIMIT_BYTES, "test") as limit:
        killed = train(in_memory, tmp_path / "art-killed", limit, check=False)
    # The limit binds: the in-memory path does not fit. When a change makes it fit, the limit (or ROWS) has to be
    # measured again: the message gives the unlimited in-memory run's peak to start from.
    assert killed["rc"] == -9 and killed["oom_kills"] == 1, (
        f"the in-memory run was not killed under {LIMIT_BYTES >> 20} MB (rc {killed['rc']}, group peak "
        f"{(killed['peak_bytes'] or 0) >> 20} MB; unlimited in-memory peak RSS "
        f"{int(reference['child_peak_rss_bytes']) >> 20} MB)")
    with MemoryLimit(LIMIT_BYTES, "test") as limit:
        limited = train(spec, tmp_path / "art-limited", limit)
    assert limited["oom_kills"] == 0
    assert limited["peak_bytes"] <= LIMIT_BYTES
    summary = limited["summary"]
    assert summary["memory"]["out_of_core"] is True, summary["memory"]
    assert summary["memory"]["available_bytes"] <= LIMIT_BYTES  # auto saw the limit
    assert summary["rows"] == reference["summary"]["rows"]
    assert summary["stages"]["train"]["seconds"] > 0
    auc, ref = summary["metrics"]["auc"], reference["summary"]["metrics"]["auc"]
    assert abs(auc - ref) <= AUC_TOLERANCE, (auc, ref)
