"""The flow class every trainpipe flow is made with: Prefect's `Flow`, with parameters serialised by pydantic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Flow
from pydantic import BaseModel


def _json_native(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_native(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_native(v) for k, v in value.items())
    return False


class TrainpipeFlow(Flow):
    """Sends the run's parameters to the API without importing fastapi.

    Prefect serialises flow parameters with fastapi's `jsonable_encoder`, imported at the first flow call of a
    process: 0.12-0.17 s of every CLI run before its first stage. trainpipe's parameters are one pydantic spec
    and JSON-native values (a trigger's dict, None), for which `model_dump(mode="json", by_alias=True)` and the
    values themselves are what that encoder returns (tested); anything else goes to Prefect's own path."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if not all(isinstance(v, BaseModel) or _json_native(v) for v in parameters.values()):
            return super().serialize_parameters(parameters)
        return {key: value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
                for key, value in parameters.items()}


def trainpipe_flow(**options: Any) -> Callable[[Callable[..., Any]], TrainpipeFlow]:
    """`@prefect.flow(**options)`, making a `TrainpipeFlow`."""

    def decorate(fn: Callable[..., Any]) -> TrainpipeFlow:
        return TrainpipeFlow(fn=fn, **options)

    return decorate
