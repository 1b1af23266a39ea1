"""One deployment's control plane on its own port, with Llama Deploy 0.8's control-plane routes.

Served on ``control-plane.port`` of a deployment file, so tools written against Llama Deploy's
control plane (``client.core``) keep working. Answers keep 0.8's shapes: a new session or task
is its id as a bare JSON string, ``GET /sessions`` is a mapping by id, results are ``null``
while the task runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.common import json_response, model_list_response, model_response
from llamactl.server.apiserver.errors import exception_handlers
from llamactl.server.apiserver.guard import middleware_for
from llamactl.server.apiserver.policy import AccessPolicy
from llamactl.server.apiserver.streams import task_events_ndjson
from llamactl.server.apiserver.validation import (
    PAGE_MAX,
    event_definition,
    id_field,
    json_body,
    model_body,
    path_id,
    query_id,
    task_definition,
)
from llamactl.server.deployment import Deployment
from llamactl.server.errors import InvalidRequest, ServiceNotFound, TaskNotFound
from llamactl.server.state.factory import redacted
from llamactl.server.types import ServiceDefinition, TaskDefinition

__all__ = ["create_control_plane_app"]

MAX_REGISTERED = 256
"""Service definitions ``POST /services/register`` keeps (they are only listed back)."""


class _ServiceRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    service_name: Annotated[StrictStr, id_field("service_name")]
    description: StrictStr = Field(default="", max_length=10_000)
    prompt: list[object] = Field(default_factory=list, max_length=1_000)
    host: StrictStr | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=0, le=65535)


def _session_id(request: Request) -> str:
    return path_id(request, "session_id", "session id")


def _deployment(request: Request) -> Deployment:
    deployment: Deployment = request.app.state.deployment
    return deployment


def _service_definitions(request: Request) -> dict[str, ServiceDefinition]:
    deployment = _deployment(request)
    out = {
        s.id: ServiceDefinition(service_name=s.id, description=s.name, host=s.host, port=s.port)
        for s in deployment.config.services.values()
    }
    out.update(request.app.state.registered)
    return out


async def root(request: Request) -> Response:
    """The control plane's settings (Llama Deploy's shape: every value a string)."""
    cp = _deployment(request).config.control_plane
    return json_response(
        {
            "running": str(cp.running),
            "step_interval": str(cp.step_interval),
            "services_store_key": cp.services_store_key,
            "tasks_store_key": cp.tasks_store_key,
            "session_store_key": cp.session_store_key,
        }
    )


async def queue_config(request: Request) -> Response:
    """Where this deployment's message queue is. Never its keys: they let a process into the
    broker, and this route answers whoever can reach the port (workers get them in their spec)."""
    config = {k: v for k, v in _deployment(request).queue_config.items() if k not in ("curve", "password")}
    if isinstance(config.get("url"), str):
        config["url"] = redacted(config["url"])
    return json_response({"ZeroMQMessageQueueConfig": config})


async def list_services(request: Request) -> Response:
    """Every service by name."""
    return json_response({k: v.model_dump(mode="json") for k, v in _service_definitions(request).items()})


async def get_service(request: Request) -> Response:
    """One service's definition."""
    name = path_id(request, "service_name", "service name")
    services = _service_definitions(request)
    if name not in services:
        raise ServiceNotFound(name, _deployment(request).name, list(services))
    return model_response(services[name])


async def register_service(request: Request) -> Response:
    """Record a service definition (listed by ``GET /services``; tasks still go to configured services)."""
    body = await model_body(request, _ServiceRegistration)
    registered: dict[str, ServiceDefinition] = request.app.state.registered
    if body.service_name not in registered and len(registered) >= MAX_REGISTERED:
        raise InvalidRequest(
            f"{MAX_REGISTERED} services are registered already: deregister one with "
            "POST /services/deregister?service_name=NAME first"
        )
    registered[body.service_name] = ServiceDefinition.model_validate(body.model_dump())
    return json_response(_deployment(request).config.control_plane.model_dump(mode="json"))


async def deregister_service(request: Request) -> Response:
    """Forget a service registered with ``POST /services/register``."""
    name = query_id(request, "service_name", "service name")
    if name is None:
        raise InvalidRequest(
            "query parameter 'service_name' is required: POST /services/deregister?service_name=NAME"
        )
    request.app.state.registered.pop(name, None)
    return json_response(None)


async def create_session(request: Request) -> Response:
    """A new session; answers its id as a JSON string."""
    session = await _deployment(request).control_plane.create_session()
    return json_response(session.session_id)


async def list_sessions(request: Request) -> Response:
    """Every session, by id."""
    sessions, _ = await _deployment(request).control_plane.list_sessions(limit=PAGE_MAX)
    return json_response({s.session_id: s.model_dump(mode="json") for s in sessions})


async def get_session(request: Request) -> Response:
    """One session."""
    cp = _deployment(request).control_plane
    return model_response(await cp.get_session(_session_id(request)))


async def delete_session(request: Request) -> Response:
    """Delete a session."""
    await _deployment(request).control_plane.delete_session(_session_id(request))
    return json_response(None)


async def add_task(request: Request) -> Response:
    """Queue a task in the session; answers its id as a JSON string."""
    definition = await task_definition(request, session_id=_session_id(request))
    record = await _deployment(request).control_plane.create_task(definition)
    return json_response(record.task_id)


async def session_tasks(request: Request) -> Response:
    """The session's tasks as TaskDefinitions, oldest first."""
    cp = _deployment(request).control_plane
    session_id = _session_id(request)
    await cp.get_session(session_id)
    tasks, _ = await cp.list_tasks(session_id, limit=PAGE_MAX)
    return model_list_response(TaskDefinition, [t.to_definition() for t in tasks])


async def current_task(request: Request) -> Response:
    """The session's newest task (``null`` if it has none)."""
    cp = _deployment(request).control_plane
    session_id = _session_id(request)
    await cp.get_session(session_id)
    tasks, _ = await cp.list_tasks(session_id, limit=1, descending=True)
    return model_response(tasks[0].to_definition()) if tasks else json_response(None)


async def _session_task(request: Request) -> str:
    cp = _deployment(request).control_plane
    session_id = _session_id(request)
    task = await cp.get_task(path_id(request, "task_id", "task id"))
    if task.session_id != session_id:
        raise TaskNotFound(task.task_id, cp.deployment)
    return task.task_id


async def task_result(request: Request) -> Response:
    """The TaskResult, or ``null`` while the task runs."""
    task_id = await _session_task(request)
    result = await _deployment(request).control_plane.task_result(task_id)
    return json_response(None) if result is None else model_response(result)


async def result_stream(request: Request) -> Response:
    """The task's events as NDJSON until it finishes."""
    task_id = await _session_task(request)
    cp = _deployment(request).control_plane
    return task_events_ndjson(cp, task_id, 0, False, request.app.state.stopping)


async def send_event(request: Request) -> Response:
    """Send a serialized workflows Event into the running task."""
    task_id = await _session_task(request)
    definition = await event_definition(request)
    await _deployment(request).control_plane.send_event(task_id, definition.event_obj_str)
    return json_response(None)


async def get_state(request: Request) -> Response:
    """The session's free-form state dict."""
    records = _deployment(request).control_plane.records
    stored = await records.session_state(_session_id(request))
    return Response(stored if stored is not None else b"{}", media_type="application/json")


async def set_state(request: Request) -> Response:
    """Replace the session's free-form state dict."""
    records = _deployment(request).control_plane.records
    await records.get_session(_session_id(request))
    state = await json_body(request)
    if not isinstance(state, dict):
        raise InvalidRequest("the session state must be a JSON object")
    await records.set_session_state(_session_id(request), json.dumps(state).encode())
    return json_response(None)


_S = "/sessions/{session_id}"

ROUTES = [
    Route("/", root, methods=["GET"]),
    Route("/queue_config", queue_config, methods=["GET"]),
    Route("/services", list_services, methods=["GET"]),
    Route("/services/register", register_service, methods=["POST"]),
    Route("/services/deregister", deregister_service, methods=["POST"]),
    Route("/services/{service_name}", get_service, methods=["GET"]),
    Route("/sessions/create", create_session, methods=["POST"]),
    Route("/sessions", list_sessions, methods=["GET"]),
    Route(_S, get_session, methods=["GET"]),
    Route(f"{_S}/delete", delete_session, methods=["POST"]),
    Route(f"{_S}/tasks", add_task, methods=["POST"]),
    Route(f"{_S}/tasks", session_tasks, methods=["GET"]),
    Route(f"{_S}/current_task", current_task, methods=["GET"]),
    Route(f"{_S}/tasks/{{task_id}}/result", task_result, methods=["GET"]),
    Route(f"{_S}/tasks/{{task_id}}/result_stream", result_stream, methods=["GET"]),
    Route(f"{_S}/tasks/{{task_id}}/send_event", send_event, methods=["POST"]),
    Route(f"{_S}/state", get_state, methods=["GET"]),
    Route(f"{_S}/state", set_state, methods=["POST"]),
]


def create_control_plane_app(deployment: Deployment, *, access: AccessPolicy | None = None) -> Starlette:
    """Llama Deploy 0.8's control-plane API over one running deployment.

    ``access`` is the API server's policy (hosts, origins, token, body size), applied here too.
    ``app.state.stopping`` is an asyncio.Event: set it to end the open result streams.
    """
    app = Starlette(
        routes=list(ROUTES),
        middleware=middleware_for(access or AccessPolicy()),
        exception_handlers=exception_handlers,
    )
    app.state.deployment = deployment
    app.state.registered = {}
    app.state.stopping = asyncio.Event()
    return app
