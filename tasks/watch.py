"""Watch: see new data at a location and ask for one retrain per settled fingerprint.

A poll lists the location (local folder, glob or s3:// prefix) with the same listing and
fingerprint the training run's ingest uses, so the fingerprint in the event is the one the
retrained version records. A burst of uploads becomes one retrain: the event goes out only
when the listing is the same as at the previous poll. A fingerprint is retrained once: the
registry is asked whether a committed version already holds it. A retrain that failed (its
run leaves a marker, see `record_trigger_failure`) or never reported back within
`retry_after_seconds` is asked for again at the next poll.

State lives in the artifact store at `<artifacts>/watch/<dataset>.json`, written atomically;
each request for a retrain first claims `<artifacts>/watch/<dataset>/claims/<fingerprint>-<attempt>`
with a create-only write, so overlapping polls send one event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any, Optional

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from trainpipe import storage
from trainpipe.errors import DataError, NoDataFiles, SpecError
from trainpipe.registry import list_versions, read_manifest
from trainpipe.sources import location_reachable, resolve_sources, sources_fingerprint
from trainpipe.spec import NAME_PATTERN, DataSpec

EVENT = "trainpipe.data.arrived"
RESOURCE_PREFIX = "trainpipe.dataset."


def dataset_resource(dataset: str) -> str:
    return f"{RESOURCE_PREFIX}{dataset}"


def check_name(value: str, what: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise SpecError(f"{what} {value!r} is not a valid name (letters, digits, '.', '_', '-'; 128 at most)")
    return value


def state_uri(artifacts: str, dataset: str) -> str:
    return storage.join(artifacts, "watch", f"{dataset}.json")


def failure_uri(artifacts: str, event_id: str) -> str:
    return storage.join(artifacts, "watch", "failed", f"{event_id}.json")


def listing(uri: str) -> Optional[dict[str, Any]]:
    """The data files at `uri` and their fingerprint (as training computes it); None when there are none."""
    try:
        files = resolve_sources(DataSpec(uris=[uri]))
    except NoDataFiles:
        return None
    except DataError:
        if location_reachable(uri):  # a folder that is not there yet, in a store that is
            return None
        raise DataError(f"cannot watch {uri}: neither it nor the folder or bucket it is in exists") from None
    return {"fingerprint": sources_fingerprint(files), "files": len(files),
            "bytes": sum(f["size"] for f in files)}


def read_state(artifacts: str, dataset: str) -> dict[str, Any]:
    uri = state_uri(artifacts, dataset)
    if not storage.exists(uri):
        return {"dataset": dataset, "listing": None, "emitted": {}}
    return storage.read_json(uri)


def trained_version(artifacts: str, model: str, fingerprint: str) -> Optional[int]:
    """The newest committed version of `model` trained on data with this fingerprint."""
    for version in reversed(list_versions(artifacts, model)):
        if read_manifest(artifacts, model, version)["data"]["fingerprint"] == fingerprint:
            return version
    return None


def decide(state: dict[str, Any], seen: Optional[dict[str, Any]], trained: Optional[int], failed: bool,
           now: dt.datetime, retry_after_seconds: float) -> str:
    """What a poll does: empty, settling, trained, pending, retry (after a failure or silence) or emit."""
    if seen is None:
        return "empty"
    fingerprint = seen["fingerprint"]
    if state.get("listing") != fingerprint:
        return "settling"
    if trained is not None:
        return "trained"
    asked = state.get("emitted", {}).get(fingerprint)
    if asked is None:
        return "emit"
    if failed:
        return "retry"
    age = (now - dt.datetime.fromisoformat(asked["at"])).total_seconds()
    return "retry" if age >= retry_after_seconds else "pending"


def build_event(dataset: str, uri: str, seen: dict[str, Any], model: Optional[str], source: str) -> Any:
    from prefect.events import Event

    return Event(
        event=EVENT,
        resource={"prefect.resource.id": dataset_resource(dataset), "prefect.resource.name": dataset},
        payload={"dataset": dataset, "uri": uri, "fingerprint": seen["fingerprint"], "files": seen["files"],
                 "bytes": seen["bytes"], "model": model, "source": source},
    )


def send_event(event: Any) -> str:
    """Send one event to the Prefect API now (not through the background queue); returns its id."""
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SpecError("PREFECT_API_URL is not set: events need a Prefect server (see README, "
                        "'Run it on your own infrastructure')")

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(event)

    if _in_event_loop():  # e.g. called from async code: asyncio.run needs a thread of its own
        _run_in_thread(send)
    else:
        asyncio.run(send())
    return str(event.id)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(send: Any) -> None:
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(send())
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def poll(uri: str, dataset: str, model: str, artifacts: str, retry_after_seconds: float,
         now: Optional[dt.datetime] = None) -> dict[str, Any]:
    """One poll: list, compare, maybe emit, save the state; returns what happened."""
    now = now or dt.datetime.now(dt.UTC)
    state = read_state(artifacts, dataset)
    seen = listing(uri)
    trained = trained_version(artifacts, model, seen["fingerprint"]) if seen else None
    asked = state.get("emitted", {}).get(seen["fingerprint"]) if seen else None
    failed = bool(asked) and storage.exists(failure_uri(artifacts, asked["event_id"]))
    action = decide(state, seen, trained, failed, now, retry_after_seconds)
    outcome: dict[str, Any] = {"action": action, "dataset": dataset, "uri": uri,
                               "fingerprint": seen["fingerprint"] if seen else None,
                               "files": seen["files"] if seen else 0, "trained_version": trained}
    if action in ("emit", "retry"):
        attempt = asked["attempt"] + 1 if asked else 1
        event = build_event(dataset, uri, seen, model, source="watcher")
        # Overlapping polls (a slow run, a manual one) must not both ask: the first to claim the attempt does.
        claim = storage.join(artifacts, "watch", dataset, "claims", f"{seen['fingerprint']}-{attempt}")
        mine = storage.dumps_json({"event_id": str(event.id), "at": now.isoformat()})
        # read back: on a store that can let two creates both succeed (moto's server), the later bytes win
        if storage.create_only(claim, mine) and storage.read_bytes(claim) == mine:
            try:
                outcome["event_id"] = send_event(event)
            except BaseException:
                fs, path = storage.get_fs(claim)
                fs.rm(path)  # not sent: the next poll may claim this attempt again
                raise
            state.setdefault("emitted", {})[seen["fingerprint"]] = {"event_id": outcome["event_id"],
                                                                     "at": now.isoformat(), "attempt": attempt}
        else:
            outcome["action"] = "pending"
            state = read_state(artifacts, dataset)
            recorded = state.get("emitted", {}).get(seen["fingerprint"])
            if not recorded or recorded.get("attempt", 0) < attempt:
                # The claimer has not written its state: it is about to, or it died after claiming (the event
                # may or may not have gone out). The claim stands for the attempt, so the usual rule applies:
                # with no run reporting back within retry_after_seconds, the next attempt is asked for.
                claimed = storage.read_json(claim)
                state.setdefault("emitted", {})[seen["fingerprint"]] = {
                    "event_id": claimed["event_id"], "at": claimed["at"], "attempt": attempt}
    state.update({"dataset": dataset, "uri": uri, "listing": seen["fingerprint"] if seen else None,
                  "polled_at": now.isoformat()})
    storage.write_json(state_uri(artifacts, dataset), state)
    return outcome


def record_trigger_failure(artifacts: str, trigger: dict[str, Any], state_name: str, message: str) -> Optional[str]:
    """Mark the event behind a failed retrain, so the watcher asks again at its next poll."""
    event_id = str(trigger.get("id") or "")
    if not event_id:
        return None
    uri = failure_uri(artifacts, event_id)
    storage.write_json(uri, {"trigger": trigger, "state": state_name, "message": message,
                             "at": dt.datetime.now(dt.UTC).isoformat()})
    return uri


@task(name="poll-data", **TRANSIENT_RETRIES)
def poll_task(uri: str, dataset: str, model: str, artifacts: str, retry_after_seconds: float) -> dict[str, Any]:
    return poll(uri, dataset, model, artifacts, retry_after_seconds)
