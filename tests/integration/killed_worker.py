"""A training run in its own OS process that kills itself with SIGKILL at a chosen point, for test_killed.py.

    python killed_worker.py after-commit ARTIFACTS DATA NAME TARGET
        run the training flow; when the store stage has written `_COMMITTED` and is about to append the
        version's `version_published` audit record, the process SIGKILLs itself: the version is committed
        but the audit log never hears of it

The Prefect API (`PREFECT_API_URL`) comes from the environment: the test session's server.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.train import train_flow
from trainpipe import registry
from trainpipe.spec import parse_spec


def die_after_commit(artifacts: str, data: str, name: str, target: str) -> None:
    def record_publication(*args: object, **kwargs: object) -> None:
        if not registry.list_versions(artifacts, name):  # prove the kill comes after the commit
            raise AssertionError("record_publication called before _COMMITTED was written")
        os.kill(os.getpid(), signal.SIGKILL)

    registry.record_publication = record_publication  # publish_version looks it up in the module
    train_flow(parse_spec({"name": name, "data": {"uris": [data]}, "target": target, "artifacts": artifacts}))
    raise AssertionError("the flow finished: record_publication was never called")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode != "after-commit":
        raise SystemExit(f"unknown mode {mode!r}")
    die_after_commit(*rest)
