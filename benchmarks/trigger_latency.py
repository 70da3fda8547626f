"""Latency of event-triggered retraining against a run started through the API, on one real stack.

    .venv/bin/pip install -c constraints.txt -e '.[test,bench]'
    .venv/bin/python benchmarks/trigger_latency.py [--rounds N]

Builds the stack the integration tests use (a Prefect server on loopback with SQLite, the
pools from `trainpipe infra setup`, `prefect deploy --all`, a process worker on `cpu`
polling every second, moto's S3 server as data and artifact store). Each round

1. starts `trainpipe-train/train-cpu` with `run_deployment` (the dashboard/API path) and
   measures created -> Running;
2. lands a new data file under the watched prefix and runs `trainpipe notify` (the path of
   storage that pushes notifications; the scheduled watcher adds its poll interval and one
   settling poll on top), and measures the event's `occurred` -> run created (the trigger)
   -> Running (worker pick-up and process start) -> Completed (a new version published).

It prints each round and the medians, and the ratio of event -> Running to the API path's
created -> Running: the trigger's own cost is the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import polars as pl
    from deploy_stack import BUCKET, LANDING, deployment_stack, finished, flow_runs, wait_for
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from trainpipe import storage

    frame = pl.read_csv(ROOT / "data" / "penguins.csv", null_values="NA")
    api_rows, event_rows = [], []
    with tempfile.TemporaryDirectory(prefix="trainpipe-latency-") as tmp:
        with deployment_stack(Path(tmp), pools=("cpu",)) as stack:
            with temporary_settings(updates={PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
                for round_ in range(args.rounds):
                    run = run_deployment("trainpipe-train/train-cpu", timeout=300, poll_interval=0.5)
                    api_rows.append((run.start_time - run.created).total_seconds())

                    part = frame.sample(fraction=0.9, seed=round_)
                    storage.write_bytes(f"s3://{BUCKET}/landing/penguins/batch-{round_}.csv",
                                        part.write_csv().encode())
                    before = len(flow_runs(client, "trainpipe-train/retrain-penguins"))
                    done = subprocess.run([sys.executable, "-m", "trainpipe", "notify", LANDING, "--dataset",
                                           "penguins", "--json"], env=stack.env, capture_output=True, text=True,
                                          check=True, cwd=ROOT)
                    event_id = json.loads(done.stdout)["event_id"]
                    new = wait_for(lambda b=before: flow_runs(client, "trainpipe-train/retrain-penguins")[b:],
                                   120, "the triggered run")
                    run = wait_for(lambda r=new[0]: finished(client, r.id), 300, "the triggered run to finish")
                    assert run.state.is_completed(), run.state
                    assert run.parameters["trigger"]["id"] == event_id
                    from datetime import datetime

                    occurred = datetime.fromisoformat(run.parameters["trigger"]["occurred"])
                    event_rows.append(((run.created - occurred).total_seconds(),
                                       (run.start_time - occurred).total_seconds(),
                                       (run.end_time - occurred).total_seconds()))
                    print(f"round {round_ + 1}: API created->running {api_rows[-1]:.1f} s; event->created "
                          f"{event_rows[-1][0]:.1f} s, ->running {event_rows[-1][1]:.1f} s, "
                          f"->version published {event_rows[-1][2]:.1f} s", flush=True)
                    time.sleep(1)
    api = statistics.median(api_rows)
    created, running, completed = (statistics.median(r[i] for r in event_rows) for i in range(3))
    print(f"median over {args.rounds} rounds: API created->running {api:.1f} s; event->run created {created:.1f} s, "
          f"event->running {running:.1f} s, event->new version {completed:.1f} s; "
          f"ratio event->running / API created->running {running / api:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
