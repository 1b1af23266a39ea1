"""Sessions: consecutive tasks in one session share the workflow Context."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.common import deployment_of, json_response, model_response, paged_response
from llamactl.server.apiserver.validation import page_params, path_id, query_id
from llamactl.server.errors import InvalidRequest
from llamactl.server.types import SessionDefinition

__all__ = ["routes"]


async def list_sessions(request: Request) -> Response:
    """Sessions, oldest first (``order=desc``: newest first): ``[SessionDefinition]``, paged like
    the task list (``limit``, ``cursor``; the next page's cursor is in ``X-Next-Cursor``)."""
    cp = deployment_of(request).control_plane
    limit, cursor, descending = page_params(request)
    sessions, next_cursor = await cp.list_sessions(limit=limit, cursor=cursor, descending=descending)
    return paged_response(SessionDefinition, sessions, next_cursor)


async def create_session(request: Request) -> Response:
    """Create a session; answers its SessionDefinition."""
    cp = deployment_of(request).control_plane
    return model_response(await cp.create_session())


async def get_session(request: Request) -> Response:
    """One session (404 if unknown)."""
    cp = deployment_of(request).control_plane
    return model_response(await cp.get_session(path_id(request, "session_id", "session id")))


async def delete_session_by_query(request: Request) -> Response:
    """Delete the session named by the ``session_id`` query parameter (Llama Deploy's shape)."""
    session_id = query_id(request, "session_id", "session id")
    if session_id is None:
        raise InvalidRequest(
            "query parameter 'session_id' is required: POST .../sessions/delete?session_id=ID"
        )
    await deployment_of(request).control_plane.delete_session(session_id)
    return json_response(None)


async def delete_session(request: Request) -> Response:
    """Delete a session."""
    cp = deployment_of(request).control_plane
    await cp.delete_session(path_id(request, "session_id", "session id"))
    return json_response(None)


_BASE = "/deployments/{name}/sessions"

routes = [
    Route(_BASE, list_sessions, methods=["GET"]),
    Route(_BASE, create_session, methods=["POST"]),
    Route(f"{_BASE}/create", create_session, methods=["POST"]),
    Route(f"{_BASE}/delete", delete_session_by_query, methods=["POST"]),
    Route(f"{_BASE}/{{session_id}}", get_session, methods=["GET"]),
    Route(f"{_BASE}/{{session_id}}", delete_session, methods=["DELETE"]),
]
