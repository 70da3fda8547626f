"""The data watcher flow: one poll of a data location, deployed on a schedule."""

from __future__ import annotations

from typing import Any, Optional

from prefect import get_run_logger

from flows.base import trainpipe_flow
from tasks.watch import check_name, poll_task
from trainpipe import storage
from trainpipe.spec import default_artifacts_uri, default_model_name


@trainpipe_flow(name="trainpipe-watch")
def watch_flow(
    uri: str,
    model: str,
    dataset: Optional[str] = None,
    artifacts: Optional[str] = None,
    retry_after_seconds: float = 1800,
) -> dict[str, Any]:
    """List `uri`; when its files changed and then held still for one poll, emit `trainpipe.data.arrived`.

    Args:
        uri: Data location to watch: a folder, glob or s3:// prefix.
        model: The model retrained from this data; a fingerprint one of its versions holds is not retrained.
        dataset: Name in the event (resource trainpipe.dataset.<name>). Empty: from the URI.
        artifacts: Artifact store root that holds the watcher's state. Empty: $TRAINPIPE_ARTIFACTS or ./artifacts.
        retry_after_seconds: Ask again for a retrain that has not published a version after this long.
    """
    dataset = check_name(dataset or default_model_name(uri), "dataset")
    check_name(model, "model")
    root = storage.normalize_root(artifacts or default_artifacts_uri())
    outcome = poll_task(uri, dataset, model, root, retry_after_seconds)
    get_run_logger().info("watch %s (%s): %s, fingerprint %s", dataset, uri, outcome["action"],
                          (outcome["fingerprint"] or "-")[:16])
    return outcome
