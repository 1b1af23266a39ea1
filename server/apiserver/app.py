"""The API server's Starlette app: every route of docs/http-api.md over a DeploymentManager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.applications import Starlette

from llamactl.server.apiserver.errors import exception_handlers
from llamactl.server.apiserver.guard import middleware_for
from llamactl.server.apiserver.policy import AccessPolicy, DeploymentRoots
from llamactl.server.apiserver.routes import dashboard, deployments, sessions, status, tasks
from llamactl.server.deployment.manager import DeploymentManager

__all__ = ["create_app"]


def create_app(
    manager: DeploymentManager,
    *,
    access: AccessPolicy | None = None,
    roots: DeploymentRoots | None = None,
    keepalive: float = 15.0,
    on_event: Callable[[str], None] | None = None,
) -> Starlette:
    """Build the API app serving ``manager``'s deployments.

    Args:
        manager: the deployments to serve (the app never closes them; its owner does).
        access: which hosts, origins and token are served, and the body size limit (default:
            loopback only, no browser origin, no token, 4 MiB).
        roots: the folders ``/deployments/create`` may load from (default: none).
        keepalive: seconds between ``: keepalive`` comments on idle SSE streams.
        on_event: called with one human line per service that comes up after a deploy.

    ``app.state.stopping`` is an asyncio.Event: set it to end every open stream (shutdown).
    """
    app = Starlette(
        # Starlette tries routes in order: the task routes (the hot path) go first. No two
        # groups' paths overlap, so the order changes nothing else.
        routes=[*tasks.routes, *sessions.routes, *status.routes, *deployments.routes, *dashboard.routes],
        middleware=middleware_for(access or AccessPolicy()),
        exception_handlers=exception_handlers,
    )
    app.state.manager = manager
    app.state.roots = roots or DeploymentRoots()
    app.state.keepalive = keepalive
    app.state.on_event = on_event
    app.state.started_at = time.time()
    app.state.stopping = asyncio.Event()
    return app
