"""A separate OS process acting on a registry, for the concurrency and crash tests.

    python registry_worker.py race ARTIFACTS NAME WORKER ROUNDS BARRIER_DIR WORKERS
        publish ROUNDS versions, each with a score, and after each one promote it through
        the gate's compare-and-swap (promoted only if its score beats the champion's)
    python registry_worker.py crash ARTIFACTS NAME
        publish a version but die by SIGKILL right before its `_COMMITTED` marker is written

Storage options (S3 endpoint, credentials) come from the environment, as in production.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainpipe import promotion as promote  # noqa: E402
from trainpipe import (
    registry,  # noqa: E402
    storage,  # noqa: E402
)
from trainpipe.spec import PromotionSpec  # noqa: E402


def score_of(artifacts: str, name: str, version: int | None) -> float:
    return float("-inf") if version is None else registry.read_manifest(artifacts, name, version)["score"]


def verdict_for(artifacts: str, name: str, score: float, champion: int | None) -> dict:
    theirs = score_of(artifacts, name, champion)
    better = score > theirs
    return {"policy": "gate", "champion_version": champion, "promote": better,
            "reason": f"score {score} {'>' if better else '<='} {theirs} of champion {champion}"}


def wait_for_all(barrier: Path, worker: int, workers: int) -> None:
    """Start only when every worker has finished its imports, so they really run at once."""
    (barrier / f"ready-{worker}").touch()
    deadline = time.time() + 180
    while len(list(barrier.glob("ready-*"))) < workers:
        if time.time() > deadline:
            raise TimeoutError("not every worker became ready")
        time.sleep(0.01)


def race(artifacts: str, name: str, worker: int, rounds: int, barrier: Path, workers: int) -> None:
    wait_for_all(barrier, worker, workers)
    for i in range(rounds):
        score = (worker * 7919 + i * 104729) % 1000 / 1000  # distinct per (worker, round)
        files = {"model.ubj": f"model {worker}/{i}".encode()}
        manifest = {"identity": {"worker": worker, "round": i}, "score": score, "prefect": {}}
        version, _ = registry.publish_version(artifacts, name, files, manifest)
        champion = registry.champion(artifacts, name)
        verdict = verdict_for(artifacts, name, score, champion)
        outcome = promote.promote_version(
            artifacts, name, version, verdict, PromotionSpec(), 0,
            regate=lambda current, score=score: verdict_for(artifacts, name, score, current),
            fields={"worker": worker})
        print(f"worker {worker} v{version} score {score} moved={outcome['moved']}", flush=True)


def crash(artifacts: str, name: str) -> None:
    real_write_json = storage.write_json

    def write_json(uri: str, value: object) -> str:
        if uri.endswith("/" + registry.COMMITTED):
            os.kill(os.getpid(), signal.SIGKILL)  # the files and manifest are written; the commit is not
        return real_write_json(uri, value)

    storage.write_json = write_json
    registry.publish_version(artifacts, name, {"model.ubj": b"never committed"},
                             {"identity": {"crash": True}, "score": 2.0, "prefect": {}})


if __name__ == "__main__":
    mode, artifacts, name, *rest = sys.argv[1:]
    if mode == "race":
        race(artifacts, name, int(rest[0]), int(rest[1]), Path(rest[2]), int(rest[3]))
    else:
        crash(artifacts, name)
