"""Small helpers the routes share: JSON answers from pre-encoded bytes, query parsing, lookups."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from llamactl.server.deployment import Deployment
from llamactl.server.deployment.manager import DeploymentManager
from llamactl.server.errors import InvalidRequest

__all__ = [
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "deployment_of",
    "json_bytes",
    "json_response",
    "manager_of",
    "model_list_response",
    "model_response",
    "page_params",
    "paged_response",
    "query_bool",
    "query_float",
    "query_int",
]

M = TypeVar("M", bound=BaseModel)

_JSON = "application/json"
_adapters: dict[type[BaseModel], TypeAdapter[Any]] = {}


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(value: Any, status: int = 200) -> Response:
    return Response(json_bytes(value), status_code=status, media_type=_JSON)


def model_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json().encode(), status_code=status, media_type=_JSON)


def model_list_response(kind: type[M], models: Sequence[M]) -> Response:
    adapter = _adapters.get(kind)
    if adapter is None:
        adapter = _adapters[kind] = TypeAdapter(list[kind])  # type: ignore[valid-type]
    return Response(adapter.dump_json(list(models)), media_type=_JSON)


def manager_of(request: Request) -> DeploymentManager:
    manager: DeploymentManager = request.app.state.manager
    return manager


def deployment_of(request: Request) -> Deployment:
    """The running deployment named in the path (404 unknown, 503 starting or stopping)."""
    return manager_of(request).get(request.path_params["name"])


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def query_bool(request: Request, key: str, default: bool = False) -> bool:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"query parameter '{key}' must be true or false, got '{raw}'")


def query_int(request: Request, key: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{key}' must be an integer, got '{raw}'") from None
    if value < 0:
        raise InvalidRequest(f"query parameter '{key}' must be 0 or more, got {value}")
    return value


PAGE_DEFAULT = 1000
"""Items a listing returns when ``limit`` is not given (Llama Deploy's listings had no pages)."""
PAGE_MAX = 10_000


def page_params(request: Request) -> tuple[int, str | None, bool]:
    """``limit`` (default PAGE_DEFAULT, at most PAGE_MAX), ``cursor`` and ``order`` (asc|desc)."""
    limit = query_int(request, "limit", PAGE_DEFAULT)
    assert limit is not None
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidRequest(f"query parameter 'limit' must be between 1 and {PAGE_MAX}, got {limit}")
    order = (request.query_params.get("order") or "asc").lower()
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"query parameter 'order' must be asc or desc, got '{order}'")
    return limit, request.query_params.get("cursor") or None, order == "desc"


def paged_response(kind: type[M], models: Sequence[M], next_cursor: str | None) -> Response:
    """A JSON list, with the cursor of the next page in ``X-Next-Cursor`` when there is one."""
    response = model_list_response(kind, models)
    if next_cursor is not None:
        response.headers["X-Next-Cursor"] = next_cursor
    return response


def query_float(request: Request, key: str) -> float | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{key}' must be a number of seconds, got '{raw}'") from None
    if value < 0:
        raise InvalidRequest(f"query parameter '{key}' must be 0 or more seconds, got {value}")
    return value
