"""Figure 7: training on Parquet data larger than a memory limit set for the process.

    .venv/bin/python benchmarks/out_of_core.py [--rows 2000000] [--limit-mb 600] [--partition-rows 200000]
                                               [--work DIR] [--json FILE]

Generates the scale benchmark's synthetic data (30 columns: numeric, categorical, dates) as Parquet, then
runs `trainpipe train` (the CLI, default spec plus `compute.external_memory: auto` and
`compute.partition_rows`) twice against one Prefect server of its own (outside the limit):

- limited: inside a cgroup v1 memory group of `--limit-mb` (`benchmarks/memlimit.py`), so `auto` sees the
  limit and the run goes out of core;
- reference: the same spec and data without a limit (the run stays in memory).

Reports whether the limited run completed (exit 0, no OOM kill), its cgroup peak, wall time, the holdout
metric of both and their ratio, the reference run's peak RSS against the limit (the data does not fit), and
the stage times; JSON on stdout (and `--json`). Needs root on a cgroup v1 machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memlimit import MemoryLimit, supported
from run import BIN, ROOT, measure, start_server

# |AUC(out of core) - AUC(in memory)| allowed: ExtMemQuantileDMatrix sketches its bins page by page, so its
# cut points (and the trees) differ a little from the in-memory QuantileDMatrix's.
AUC_TOLERANCE = 0.005


def make_data(work: Path, rows: int) -> Path:
    """The synthetic Parquet, generated in a child process: Linux carries a process's peak RSS over into the
    children it starts, so generating it here would inflate the runs' `wait4` peaks."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from run import synthetic; " \
           f"from pathlib import Path; print(synthetic(Path({str(work)!r}), {rows}, 'parquet'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def write_spec(work: Path, data: Path, partition_rows: int, mode: str = "auto") -> Path:
    spec = work / f"out_of_core_{mode}.yaml"
    spec.write_text(f"data:\n  uris: [{data}]\ntarget: y\ncompute:\n  external_memory: \"{mode}\"\n"
                    f"  partition_rows: {partition_rows}\n")
    return spec


def summary(stdout: str) -> Optional[dict[str, Any]]:
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


def measure_out_of_core(work: Path, env: dict[str, str], rows: int, limit_mb: int,
                        partition_rows: int, mode: str = "auto") -> dict[str, Any]:
    """Both runs and the comparison, as one JSON-ready dict (`mode`: the limited run's external_memory)."""
    data = make_data(work, rows)
    spec = write_spec(work, data, partition_rows, mode)
    cmd = [str(BIN / "trainpipe"), "train", str(spec), "--json"]
    with MemoryLimit(limit_mb * 2**20, "bench") as limit:
        limited = limit.run([*cmd, "--artifacts", str(work / "art-limited"), "--name", "ooc-limited"], env=env,
                            cwd=str(ROOT))
    cmd = [str(BIN / "trainpipe"), "train", str(write_spec(work, data, partition_rows)), "--json"]
    reference = measure([*cmd, "--artifacts", str(work / "art-reference"), "--name", "ooc-reference"], env)
    small = summary(limited.pop("stdout"))
    stderr = limited.pop("stderr")
    big = reference.get("json")
    out: dict[str, Any] = {
        "rows": rows, "columns": 30, "data_file_mb": data.stat().st_size / 2**20, "limit_mb": limit_mb,
        "partition_rows": partition_rows, "mode": mode, "auc_tolerance": AUC_TOLERANCE,
        "limited": {**limited, "peak_mb": (limited["peak_bytes"] or 0) / 2**20,
                    "child_peak_rss_mb": limited["child_peak_rss_bytes"] / 2**20,
                    "memory": (small or {}).get("memory"), "metrics": (small or {}).get("metrics"),
                    "stages": {k: v["seconds"] for k, v in (small or {}).get("stages", {}).items()},
                    "stderr_tail": stderr[-2000:] if limited["rc"] else ""},
        "reference": {"rc": reference["rc"], "wall_s": reference["wall_s"], "peak_rss_mb": reference["rss_mb"],
                      "memory": (big or {}).get("memory"), "metrics": (big or {}).get("metrics"),
                      "stages": {k: v["seconds"] for k, v in (big or {}).get("stages", {}).items()}},
    }
    out["completed"] = limited["rc"] == 0 and not limited["oom_kills"] and small is not None
    if out["completed"] and big:
        auc, ref = small["metrics"]["auc"], big["metrics"]["auc"]
        out.update(auc_limited=auc, auc_reference=ref, auc_ratio=auc / ref, auc_difference=auc - ref,
                   within_tolerance=abs(auc - ref) <= AUC_TOLERANCE,
                   wall_ratio=limited["wall_s"] / reference["wall_s"],
                   reference_peak_over_limit=reference["rss_mb"] / limit_mb)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--limit-mb", type=int, default=600)
    parser.add_argument("--partition-rows", type=int, default=200_000)
    parser.add_argument("--mode", default="auto", choices=["auto", "on", "off"],
                        help="compute.external_memory of the limited run (default auto; off shows the in-memory "
                        "path killed)")
    parser.add_argument("--work", help="work folder (default: a new temporary one)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    if not supported():
        print("needs root on a cgroup v1 memory hierarchy (/sys/fs/cgroup/memory)", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="trainpipe-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    server, env = start_server(work / "prefect-home")
    try:
        result = measure_out_of_core(work, env, args.rows, args.limit_mb, args.partition_rows, args.mode)
    finally:
        server.terminate()
        server.wait(30)
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0 if result["completed"] and result.get("within_tolerance") else 1


if __name__ == "__main__":
    sys.exit(main())
