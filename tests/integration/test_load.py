"""Load: many training runs submitted at once to one process work pool with a concurrency limit, against a
Prefect server on PostgreSQL (a throwaway database), artifact store on moto's S3 server.

All runs train one model name, so version claims, audit appends and champion moves contend. The seeds
repeat, and runs of one seed are submitted next to each other so that they run at the same moment: they
train the same model on the same data and must share one version even when they publish together;
distinct seeds give distinct versions. Promotion policy `always`, so every new version moves the
champion and the moves contend too.

Size: TRAINPIPE_LOAD_RUNS (20), TRAINPIPE_LOAD_SEEDS (5), TRAINPIPE_LOAD_LIMIT (4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from deploy_stack import STORE, Stack, deployment_stack, finished, wait_for

from trainpipe import audit, registry, storage

pytestmark = pytest.mark.integration

RUNS = int(os.environ.get("TRAINPIPE_LOAD_RUNS", "20"))
SEEDS = int(os.environ.get("TRAINPIPE_LOAD_SEEDS", "5"))
LIMIT = int(os.environ.get("TRAINPIPE_LOAD_LIMIT", "4"))
NAME = "load-penguins"


def load_spec(seed: int) -> dict[str, Any]:
    return {"name": NAME, "data": {"uris": ["data/penguins.csv"]}, "target": "species", "seed": seed,
            "xgboost": {"num_boost_round": 20, "early_stopping_rounds": 5, "nthread": 1},
            "promotion": {"policy": "always", "bootstrap_samples": 200}}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The pool's limit alone is soft: the server counts only PENDING and RUNNING runs when it hands runs to a
    # worker, and a worker polling every second can fetch again before the runs it just took are PENDING
    # (measured here: 5 running at once under a limit of 4). The worker's own --limit is a hard cap.
    with deployment_stack(tmp_path_factory.mktemp("load"), pools=("cpu",), worker_limit=LIMIT) as built:
        built.run(sys.executable, "-m", "prefect", "work-pool", "set-concurrency-limit", "cpu", str(LIMIT))
        with temporary_settings(updates={PREFECT_API_URL: built.api_url}):
            yield built


def test_runs_submitted_at_once_queue_on_the_pool_limit_and_share_one_registry(stack: Stack):
    from prefect.client.orchestration import get_client

    started = time.monotonic()
    seeds = [i * SEEDS // RUNS for i in range(RUNS)]  # 0 0 0 0 1 1 1 1 ...
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("cpu").concurrency_limit == LIMIT
        deployment = client.read_deployment_by_name("trainpipe-train/train-cpu")
        runs = [client.create_flow_run_from_deployment(deployment.id, parameters={"spec": load_spec(seed)})
                for seed in seeds]
        submitted = time.monotonic()
        done = [wait_for(lambda r=run: finished(client, r.id), 900, f"flow run {run.id}") for run in runs]
    drained = time.monotonic()

    states = {str(r.id): r.state.type.value for r in done}
    assert all(r.state.is_completed() for r in done), {k: v for k, v in states.items() if v != "COMPLETED"}
    assert all(r.work_pool_name == "cpu" and r.start_time and r.end_time for r in done)
    intervals = [(r.start_time.timestamp(), r.end_time.timestamp()) for r in done]
    peak = most_at_once(intervals)
    assert peak <= LIMIT, f"{peak} runs were running at once; the pool allows {LIMIT}"
    assert peak >= min(2, LIMIT), f"never more than {peak} run at once: the pool did not run them side by side"

    results = [client_result(r) for r in done]
    by_seed: dict[int, set[int]] = {}
    for seed, result in zip(seeds, results):
        by_seed.setdefault(seed, set()).add(result["version"])
    assert all(len(v) == 1 for v in by_seed.values()), (
        f"runs of one seed got several versions: {by_seed}\n{claims_report(results)}")
    versions = registry.list_versions(STORE, NAME)
    assert sorted(v for (v,) in by_seed.values()) == versions, (by_seed, versions)
    assert len(versions) == SEEDS
    identities = [json.dumps(registry.read_manifest(STORE, NAME, v)["identity"], sort_keys=True) for v in versions]
    assert len(set(identities)) == SEEDS
    lost = sorted(set(registry.claimed_versions(STORE, NAME)) - set(versions))  # claims of runs that joined a rival
    assert all(storage.exists(storage.join(registry.version_uri(STORE, NAME, v), registry.ABANDONED)) for v in lost)
    fresh = [r for r in results if not r["reused"]]
    assert len(fresh) >= SEEDS  # every version was published by one of them

    records = audit.read_log(STORE, NAME)
    published = [r["version"] for r in records if r["event"] == "version_published"]
    assert sorted(published) == versions  # one publication record per version, none for a run that lost a race
    verdicts: dict[int, int] = {}
    for record in records:
        if record["event"] == "gate_verdict" and not record.get("regated"):
            verdicts[record["version"]] = verdicts.get(record["version"], 0) + 1
    assert verdicts == {v: 1 for v in versions}, verdicts  # each version judged once, whoever published it
    moves = audit.alias_moves(records, audit.CHAMPION)
    assert len(moves) == SEEDS, moves  # policy always: each version became champion once
    holder = None
    for move in moves:  # one chain: each move starts from where the previous one left the champion
        assert move["from_version"] == holder, moves
        assert move["version"] in versions
        holder = move["version"]
    assert registry.champion(STORE, NAME) == holder
    assert registry.aliases(STORE, NAME) == {audit.CHAMPION: holder}

    verify = subprocess.run([sys.executable, "-m", "trainpipe", "audit", "verify", NAME], env=stack.env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit log intact" in verify.stdout

    durations = sorted(end - start for start, end in intervals)
    print(f"\nload: {RUNS} runs ({SEEDS} seeds) on a pool limited to {LIMIT}: submitted in "
          f"{submitted - started:.1f} s, all finished {drained - submitted:.1f} s after submission; "
          f"at most {peak} running at once; run time median {durations[len(durations) // 2]:.1f} s, "
          f"max {durations[-1]:.1f} s; {len(versions)} versions, {len(records)} audit records, "
          f"{len(moves)} champion move(s), {sum(r['reused'] for r in results)} run(s) reused a version, "
          f"{len(lost)} claim(s) abandoned to an identical rival")


def claims_report(results: list[dict[str, Any]]) -> str:
    """Every claim in the store with what became of it, and what each run returned: read when the test fails."""
    lines = []
    for version in registry.claimed_versions(STORE, NAME):
        folder = registry.version_uri(STORE, NAME, version)
        files = set(storage.list_dir(folder))
        claim = storage.read_json(storage.join(folder, registry.CLAIM)) if registry.CLAIM in files else None
        committed = (storage.read_json(storage.join(folder, registry.COMMITTED))["committed_at"]
                     if registry.COMMITTED in files else None)
        abandoned = (storage.read_json(storage.join(folder, registry.ABANDONED))
                     if registry.ABANDONED in files else None)
        lines.append(f"v{version}: claim {claim}; committed {committed}; abandoned {abandoned}")
        if committed:
            manifest = registry.read_manifest(STORE, NAME, version)
            lines.append(f"  identity {manifest['identity']}; training {manifest.get('training')}; "
                         f"files {manifest.get('files')}")
    lines += [json.dumps({k: r.get(k) for k in ("version", "reused", "stages", "fit_run")}, default=str)
              for r in results]
    return "\n".join(lines)


def client_result(run: Any) -> dict[str, Any]:
    """The flow's returned summary (persisted as JSON by the flow's result settings)."""
    return run.state.result()
