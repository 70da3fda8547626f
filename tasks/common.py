"""What every stage's task wrapper shares: content-keyed caching, stage folders, retries."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Optional, TypeVar

from prefect import task
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from trainpipe import storage
from trainpipe.errors import StorageError, TrainpipeError
from trainpipe.provenance import stage_key
from trainpipe.results import StageResult

R = TypeVar("R", bound=StageResult)

SUCCESS_MARKER = "_SUCCESS"

# Transient I/O gets three more tries, 2 s, 4 s, 8 s apart, with jitter.
RETRY_DELAYS = exponential_backoff(backoff_factor=2)
RETRY_JITTER = 0.5


def stage_dir(artifacts: str, stage: str, inputs: dict[str, Any]) -> str:
    """Content-addressed folder of one stage run: `<artifacts>/cache/<stage>/<key>`."""
    return storage.join(artifacts, "cache", stage, stage_key(stage, inputs))


def _split_inputs(parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    inputs = dict(parameters)
    artifacts = inputs.pop("artifacts")
    return artifacts, inputs


def cache_key_for(stage: str) -> Callable[[TaskRunContext, dict[str, Any]], Optional[str]]:
    """A Prefect cache_key_fn keyed on content fingerprints, the stage's inputs and the code version.

    The key names the stage folder, whose outputs are a pure function of it. When Prefect
    holds a record for the key but the folder's outputs are gone (a cleaned artifact
    store), no key is returned, so the stage runs once more and rewrites the same files,
    after which the old record is right again.
    """

    def key_fn(context: TaskRunContext, parameters: dict[str, Any]) -> Optional[str]:
        artifacts, inputs = _split_inputs(parameters)
        folder = stage_dir(artifacts, stage, inputs)
        # The folder URI (artifact root included) is the key: two stores never share records.
        key = f"trainpipe-{stage}-{storage.sha256_bytes(folder.encode())[:40]}"
        if storage.exists(storage.join(folder, SUCCESS_MARKER)):
            return key
        store = getattr(context, "result_store", None)
        return None if store is not None and store.exists(key) else key

    return key_fn


def current_stage_dir(stage: str) -> str:
    """The stage folder of the running task, from the parameters Prefect called it with."""
    context = TaskRunContext.get()
    if context is None:
        raise RuntimeError("current_stage_dir() works only inside a task run")
    artifacts, inputs = _split_inputs(context.parameters)
    return stage_dir(artifacts, stage, inputs)


def content_fingerprint(*parts: Any) -> str:
    """Fingerprint of a stage's output content (digests of its files, small values)."""
    return storage.sha256_bytes(storage.dumps_json(list(parts)))


def finish_stage(folder: str, kind: type[R], meta: dict[str, Any], started: float, content: list[Any]) -> R:
    """Record a stage's outputs as complete (the marker is written last) and return them as a `kind` result.

    The `fingerprint` downstream stages key on is a hash of the output content, so a stage
    that re-runs (e.g. validation against a new contract) but yields the same data leaves
    every later stage cached.
    """
    result = kind(**meta, fingerprint=content_fingerprint(*content), stage_key=folder.rsplit("/", 1)[-1],
                  seconds=round(time.perf_counter() - started, 3))
    storage.write_json(storage.join(folder, SUCCESS_MARKER), result.model_dump(mode="json"))
    return result


def is_transient(exc: BaseException) -> bool:
    """Network, object-store and timeout errors (connection trouble, throttling, 5xx); not missing files,
    refused access or bad data."""
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, TrainpipeError):
        return False
    kind = storage.classify_error(exc)  # botocore's and aiohttp's connection errors are no OSErrors
    if kind is not None:
        return kind == "transient"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(exc, (OSError, ConnectionError, TimeoutError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient I/O failures."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classify whatever the stage raised
        return is_transient(exc)
    return False


TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}


def stored_stage_result(folder: str, kind: type[R]) -> Optional[R]:
    """The result a completed stage folder recorded, or None when it is not complete."""
    marker = storage.join(folder, SUCCESS_MARKER)
    if not storage.exists(marker):
        return None
    return kind.model_validate({**storage.read_json(marker), "seconds": 0.0, "from_store": True})


def cached_stage(stage: str, kind: type[StageResult], *, io_retries: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """The @task decorator of a cached stage: content-keyed cache, persisted result, retries of transient I/O.

    Every cached stage reads and writes the store, so each retries transient failures (`is_transient`);
    a retry is safe because the stage rewrites the same content-addressed files and its marker comes last.

    Besides Prefect's own cache, a stage whose folder in the artifact store is already
    complete returns what that folder recorded instead of redoing the work: a fresh
    Prefect home, another worker or another machine sharing the store reuses it too.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run_or_reuse(*args: Any, **kwargs: Any) -> Any:
            done = stored_stage_result(current_stage_dir(stage), kind)
            return done if done is not None else fn(*args, **kwargs)

        return task(
            name=stage,
            cache_key_fn=cache_key_for(stage),
            persist_result=True,
            result_serializer="json",  # results are small JSON metadata: no pickle anywhere
            **(TRANSIENT_RETRIES if io_retries else {}),
        )(run_or_reuse)

    return decorate


def run_stage(stages: dict[str, Any], name: str, stage: Any, *args: Any) -> Any:
    """Run a stage task or subflow; note whether it was served from cache (Prefect's or the store's), its time
    (the stage's own work, or the call's wall time for a stage that does not report it) and when it started."""
    started_at, started = time.time(), time.perf_counter()
    state = stage(*args, return_state=True)
    result = state.result()
    cached = state.name == "Cached" or bool(getattr(result, "from_store", False))
    seconds = getattr(result, "seconds", None)
    stages[name] = {"cached": cached,
                    "seconds": 0.0 if cached else round(time.perf_counter() - started if seconds is None else seconds, 3),
                    "started_at": round(started_at, 3)}
    return result
