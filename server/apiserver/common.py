"""Small helpers the routes share: JSON answers from pre-encoded bytes, and lookups.

What a request carries is checked in :mod:`llamactl.server.apiserver.validation`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from llamactl.server.deployment import Deployment
from llamactl.server.deployment.manager import DeploymentManager
from llamactl.server.ids import check_id

__all__ = [
    "deployment_of",
    "json_bytes",
    "json_response",
    "manager_of",
    "model_list_response",
    "model_response",
    "paged_response",
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
    return manager_of(request).get(check_id(request.path_params["name"], "deployment name"))


def paged_response(kind: type[M], models: Sequence[M], next_cursor: str | None) -> Response:
    """A JSON list, with the cursor of the next page in ``X-Next-Cursor`` when there is one."""
    response = model_list_response(kind, models)
    if next_cursor is not None:
        response.headers["X-Next-Cursor"] = next_cursor
    return response
