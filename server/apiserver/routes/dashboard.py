"""What the dashboard (``llamactl tui``) needs beyond the other routes: the size of sessions' Contexts.

A session's workflow Context can grow without bound (whatever the workflow keeps in its store), so
the dashboard's state tree shows each session's Context size; the session routes keep Llama
Deploy's shapes and do not carry it.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.common import deployment_of, json_response
from llamactl.server.errors import InvalidRequest
from llamactl.server.ids import id_problem

__all__ = ["MAX_SESSIONS", "routes"]

MAX_SESSIONS = 100
"""Session ids one ``contexts`` request may name."""


async def context_sizes(request: Request) -> Response:
    """``{"contexts": {"<session_id>": <bytes of its saved Context JSON> | null}}``.

    Query: ``session_id``, repeated (at most :data:`MAX_SESSIONS`). ``null``: the session has no
    saved Context yet (no task of it has finished) or does not exist.
    """
    # As every query id (validation.query_id): an empty value names nothing.
    session_ids = list(dict.fromkeys(s for s in request.query_params.getlist("session_id") if s))
    if not session_ids:
        raise InvalidRequest(
            "name the sessions with the query parameter 'session_id' (repeat it for several)"
        )
    if len(session_ids) > MAX_SESSIONS:
        raise InvalidRequest(
            f"{len(session_ids)} sessions named, at most {MAX_SESSIONS} per request: split the request"
        )
    for session_id in session_ids:
        if (problem := id_problem(session_id, "session id")) is not None:
            raise InvalidRequest(f"query parameter 'session_id': {problem}")
    records = deployment_of(request).control_plane.records
    sizes: dict[str, int | None] = {}
    for session_id in session_ids:
        context = await records.contexts.get(session_id)
        sizes[session_id] = None if context is None else len(json.dumps(context).encode())
    return json_response({"contexts": sizes})


routes = [
    Route("/deployments/{name}/dashboard/contexts", context_sizes, methods=["GET"]),
]
