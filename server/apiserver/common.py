"""Small helpers the routes share: JSON answers from pre-encoded bytes, and lookups.

What a request carries is checked in :mod:`llamactl.server.apiserver.validation`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from llamactl.server.aio import cancel_and_wait
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
    "unless_client_leaves",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

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


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, unless the client goes away first: then ``work`` is cancelled and
    ClientDisconnect raised. Starlette never cancels a route whose client left, so a waiter of a
    task would otherwise stay (its listener, its coroutine) until the task ends or its wait does.

    Only for work that may stop at any await (a wait, a read): nothing it began is finished.
    """
    working = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_gone(request.receive))
    try:
        await asyncio.wait((working, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (gone, working):
            if not future.done():
                await cancel_and_wait(future)
    if not working.cancelled():
        return working.result()
    if not gone.cancelled():
        gone.result()  # the body's size limit, say, broken while we listened
    raise ClientDisconnect()
