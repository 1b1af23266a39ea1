"""Turn what user code returns or streams into JSON-encodable values and event envelopes."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from pydantic import BaseModel

from llamactl.server.errors import NotEncodable

__all__ = ["envelope", "qualified_name", "to_jsonable"]


def qualified_name(obj: object) -> str:
    """``module.Class`` of ``obj``'s type (``builtins.dict`` for a dict)."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_jsonable(value: Any) -> Any:
    """A JSON-encodable rendering of ``value``.

    Pydantic models become ``model_dump(mode="json")``; dicts, lists, tuples and sets are converted
    item by item; anything else that JSON cannot hold (including NaN/inf) becomes ``str(value)``.

    Raises:
        NotEncodable: ``value`` contains itself, or nests deeper than Python recurses.
    """
    try:
        return _jsonable(value)
    except RecursionError:
        raise NotEncodable() from None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="json")
        except Exception:
            dumped = _jsonable(value.model_dump())
        return _flatten_event_data(dumped)
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _flatten_event_data(dumped: Any) -> Any:
    # workflows Events keep fields not declared on the class (InputRequiredEvent(prefix=...))
    # under "_data"; users expect them beside the declared ones, and JsonSerializer reads
    # the flat form back just as well.
    if isinstance(dumped, dict) and isinstance(dumped.get("_data"), dict):
        extra = dumped.pop("_data")
        for key, item in extra.items():
            dumped.setdefault(key, item)
    return dumped


def envelope(item: Any) -> dict[str, Any]:
    """``{"value", "type", "qualified_name"}`` for a streamed item.

    A workflows Event (any pydantic model) carries its fields as ``value`` (declared fields and
    the free-form ones side by side), so a client can rebuild it with ``JsonSerializer`` from
    ``{"__is_pydantic": true, "value": value, "qualified_name": qualified_name}``; a StopEvent's
    value holds its ``result`` on either workflows version. Plain values keep their builtin type
    name (``dict``, ``str``, ...).
    """
    value = to_jsonable(item)
    if _is_stop_event(item) and isinstance(value, dict) and "result" not in value:
        # workflows 1.x keeps a StopEvent's result in a private attribute, which model_dump leaves out
        value["result"] = to_jsonable(item.result)
    return {"value": value, "type": type(item).__name__, "qualified_name": qualified_name(item)}


def _is_stop_event(item: Any) -> bool:
    # Only a process that loaded ``workflows`` can hold a StopEvent; a function service's does not
    # load it for this check.
    events = sys.modules.get("workflows.events")
    return events is not None and isinstance(item, events.StopEvent)
