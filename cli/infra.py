"""Work pools, their queues and the GPU concurrency limit on a Prefect server, set up idempotently.

`trainpipe infra setup` calls `setup_infrastructure`: running it again brings a server whose
pools or limit drifted (an edited template, another slot count) back to what is declared here
and in `deployments/*-pool.json`, and changes nothing otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainpipe.errors import SpecError
from trainpipe.provenance import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "deployments"
GPU_LIMIT = "gpu"


@dataclass(frozen=True)
class PoolPlan:
    """One process work pool: its base job template file and its queues (name, priority; 1 is served first)."""

    name: str
    template: str
    description: str
    queues: tuple[tuple[str, int], ...] = field(default=(("default", 1),))


POOLS = (
    PoolPlan("cpu", "cpu-pool.json", "trainpipe: data stages, CPU training, the data watcher",
             queues=(("default", 1), ("retrain", 2))),
    PoolPlan("gpu", "gpu-pool.json", "trainpipe: tuning/training on a GPU (XGBoost device=cuda)"),
    PoolPlan("dask", "dask-pool.json", "trainpipe: training and tuning on a Dask cluster (compute.engine dask)"),
)
DASK_ENV = ("TRAINPIPE_DASK_ADDRESS", "TRAINPIPE_DATA_ROOTS")


def with_pool_env(template: dict[str, Any], values: dict[str, Optional[str]]) -> dict[str, Any]:
    """The template with the given job-variable env defaults set (None: left as the file has it)."""
    out = json.loads(json.dumps(template))
    defaults = out["variables"]["properties"]["env"].setdefault("default", {})
    defaults.update({k: v for k, v in values.items() if v is not None})
    return out


def load_template(plan: PoolPlan, folder: Path = TEMPLATES) -> dict[str, Any]:
    path = folder / plan.template
    try:
        template = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"base job template not found: {path}") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"base job template {path} is not valid JSON: {error}") from None
    if not isinstance(template, dict) or "job_configuration" not in template or "variables" not in template:
        raise SpecError(f"base job template {path} needs 'job_configuration' and 'variables'")
    return template


async def ensure_pool(client: Any, plan: PoolPlan, template: dict[str, Any]) -> str:
    """Create the pool, or bring its template and description in line; returns what was done."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        pool = await client.read_work_pool(plan.name)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=plan.name, type="process", description=plan.description,
                                                     base_job_template=template))
        return "created"
    if pool.type != "process":
        raise SpecError(f"work pool {plan.name!r} exists with type {pool.type!r}; trainpipe expects 'process'")
    if pool.base_job_template == template and pool.description == plan.description:
        return "unchanged"
    await client.update_work_pool(plan.name, WorkPoolUpdate(base_job_template=template,
                                                            description=plan.description))
    return "updated"


async def ensure_queues(client: Any, plan: PoolPlan) -> dict[str, str]:
    existing = {q.name: q for q in await client.read_work_queues(work_pool_name=plan.name)}
    done: dict[str, str] = {}
    for name, priority in plan.queues:
        queue = existing.get(name)
        if queue is None:
            await client.create_work_queue(name=name, work_pool_name=plan.name, priority=priority)
            done[name] = "created"
        elif queue.priority != priority:
            await client.update_work_queue(queue.id, priority=priority)
            done[name] = "updated"
        else:
            done[name] = "unchanged"
    return done


async def ensure_limit(client: Any, name: str, slots: int) -> str:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        limit = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
        return "created"
    if limit.limit == slots and limit.active:
        return "unchanged"
    await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
    return "updated"


async def setup_infrastructure(gpu_slots: int = 1, folder: Path = TEMPLATES, dask_address: Optional[str] = None,
                               data_roots: Optional[str] = None) -> dict[str, Any]:
    """Pools `cpu`, `gpu` and `dask` with their queues, and the global limit `gpu` with `gpu_slots` slots.

    The dask pool's job variables carry `dask_address` (TRAINPIPE_DASK_ADDRESS) and `data_roots`
    (TRAINPIPE_DATA_ROOTS) when given.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if gpu_slots < 1:
        raise SpecError(f"--gpu-slots must be at least 1, not {gpu_slots}")
    if not PREFECT_API_URL.value():
        raise SpecError("PREFECT_API_URL is not set: point it at the Prefect server to set up "
                        "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    templates = {plan.name: load_template(plan, folder) for plan in POOLS}  # all read before any change
    templates["dask"] = with_pool_env(templates["dask"], dict(zip(DASK_ENV, (dask_address, data_roots))))
    report: dict[str, Any] = {"pools": {}, "queues": {}}
    async with get_client() as client:
        for plan in POOLS:
            report["pools"][plan.name] = await ensure_pool(client, plan, templates[plan.name])
            report["queues"][plan.name] = await ensure_queues(client, plan)
        report["concurrency_limits"] = {GPU_LIMIT: await ensure_limit(client, GPU_LIMIT, gpu_slots)}
    return report
