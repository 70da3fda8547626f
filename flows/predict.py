"""The batch scoring flow: one stored model version over new rows."""

from __future__ import annotations

from typing import Any, Optional

from flows.base import trainpipe_flow
from tasks.predict import predict_task
from trainpipe import storage
from trainpipe.spec import default_artifacts_uri


@trainpipe_flow(name="trainpipe-predict")
def predict_flow(
    model: str, data: str, out: str, artifacts: Optional[str] = None, keep: Optional[list[str]] = None
) -> dict[str, Any]:
    """Score `data` with `model` (NAME or NAME:VERSION) and write predictions to `out`.

    `keep` names input columns copied to the output beside the model's id columns.
    """
    return predict_task(storage.normalize_root(artifacts or default_artifacts_uri()), model, data, out, keep or [])

