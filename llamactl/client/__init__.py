"""The Python client of a llamactl server's HTTP API (docs/http-api.md): `Client` and `AsyncClient`.

Example::

    from llamactl.client import Client

    with Client("http://127.0.0.1:4501") as client:
        app = client.deployment("my-app")
        task = app.tasks.create({"message": "hi"})
        for event in app.tasks.events(task.task_id):
            print(event.type, event.value)
        print(app.tasks.get(task.task_id).result)

Importing this package imports httpx and the wire models (``llamactl.server.types``, pydantic only).
"""

from __future__ import annotations

from llamactl.client.aio import AsyncClient
from llamactl.client.errors import (
    ApiError,
    BackendUnavailable,
    BadRequest,
    ClientError,
    Conflict,
    DeploymentDeleting,
    DeploymentStarting,
    Forbidden,
    InvalidServerUrl,
    NotFound,
    NotLlamactlServer,
    Overloaded,
    ServerError,
    ServerStopping,
    ServerUnreachable,
    StreamBroken,
    TaskFailed,
    Unauthorized,
    WaitTimeout,
)
from llamactl.client.models import DeploymentState, Page
from llamactl.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BackendUnavailable",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "DeploymentDeleting",
    "DeploymentStarting",
    "DeploymentState",
    "Forbidden",
    "InvalidServerUrl",
    "NotFound",
    "NotLlamactlServer",
    "Overloaded",
    "Page",
    "ServerError",
    "ServerStopping",
    "ServerUnreachable",
    "StreamBroken",
    "TaskFailed",
    "Unauthorized",
    "WaitTimeout",
]
