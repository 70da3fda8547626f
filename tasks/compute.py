"""What a worker brings to the fit stage: its XGBoost device and a slot of its pool's concurrency limit."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, Optional

from trainpipe.boosting import cuda_visible
from trainpipe.errors import SpecError
from trainpipe.spec import XGBoostSpec

DEVICE_ENV = "TRAINPIPE_XGBOOST_DEVICE"



LIMIT_ENV = "TRAINPIPE_CONCURRENCY_LIMIT"



def worker_xgboost(xgboost: XGBoostSpec) -> XGBoostSpec:
    """The XGBoost spec with the worker's device (`TRAINPIPE_XGBOOST_DEVICE`, set by the pool) applied."""
    device = os.environ.get(DEVICE_ENV, "").strip()
    if not device:
        return xgboost
    if device not in ("cpu", "cuda"):
        raise SpecError(f"{DEVICE_ENV}={device!r} on this worker: expected cpu or cuda")
    if device == "cuda" and not cuda_visible():
        raise SpecError(f"{DEVICE_ENV}=cuda (from this worker's pool or job) but no CUDA device (or no CUDA "
                        "build of XGBoost) is on this worker: run GPU pool workers on GPU hosts; training never "
                        "falls back to the CPU")
    return xgboost.model_copy(update={"device": device})



@contextlib.contextmanager
def worker_slot(logger: Optional[logging.Logger | logging.LoggerAdapter] = None) -> Iterator[Optional[dict[str, Any]]]:
    """Hold one slot of the global concurrency limit the pool names in `TRAINPIPE_CONCURRENCY_LIMIT`."""
    name = os.environ.get(LIMIT_ENV, "").strip()
    if not name:
        yield None
        return
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    # strict: a missing limit is an error, not an unlimited run.
    with concurrency(name, occupy=1, strict=True):
        with get_client(sync_client=True) as client:
            held = client.read_global_concurrency_limit_by_name(name)
        slot = {"limit": name, "slots": held.limit, "active_slots": held.active_slots}
        if logger is not None:
            logger.info("holding a slot of concurrency limit %s (%s/%s in use)", name, held.active_slots, held.limit)
        yield slot
