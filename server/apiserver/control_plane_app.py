"""One deployment's control plane on its own port, with Llama Deploy 0.8's control-plane routes.

Served on ``control-plane.port`` of a deployment file, so tools written against Llama Deploy's
control plane (``client.core``) keep working. Answers keep 0.8's shapes: a new session or task
is its id as a bare JSON string, ``GET /sessions`` is a mapping by id, results are ``null``
while the task runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.auth import BearerTokenMiddleware
from llamactl.server.apiserver.common import PAGE_MAX, json_response, model_list_response, model_response
from llamactl.server.apiserver.errors import CatchAllMiddleware, exception_handlers
from llamactl.server.apiserver.streams import task_events_ndjson
from llamactl.server.deployment import Deployment
from llamactl.server.errors import InvalidRequest, ServiceNotFound, TaskNotFound
from llamactl.server.types import EventDefinition, ServiceDefinition, TaskDefinition

__all__ = ["create_control_plane_app"]


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
    """How workers reach this deployment's message queue."""
    return json_response({"ZeroMQMessageQueueConfig": _deployment(request).queue_config})


async def list_services(request: Request) -> Response:
    """Every service by name."""
    return json_response({k: v.model_dump(mode="json") for k, v in _service_definitions(request).items()})


async def get_service(request: Request) -> Response:
    """One service's definition."""
    name = request.path_params["service_name"]
    services = _service_definitions(request)
    if name not in services:
        raise ServiceNotFound(name, _deployment(request).name, list(services))
    return model_response(services[name])


async def register_service(request: Request) -> Response:
    """Record a service definition (listed by ``GET /services``; tasks still go to configured services)."""
    definition = ServiceDefinition.model_validate_json(await request.body())
    request.app.state.registered[definition.service_name] = definition
    return json_response(_deployment(request).config.control_plane.model_dump(mode="json"))


async def deregister_service(request: Request) -> Response:
    """Forget a service registered with ``POST /services/register``."""
    name = request.query_params.get("service_name")
    if not name:
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
    return model_response(await cp.get_session(request.path_params["session_id"]))


async def delete_session(request: Request) -> Response:
    """Delete a session."""
    await _deployment(request).control_plane.delete_session(request.path_params["session_id"])
    return json_response(None)


async def add_task(request: Request) -> Response:
    """Queue a task in the session; answers its id as a JSON string."""
    definition = TaskDefinition.model_validate_json(await request.body())
    definition.session_id = request.path_params["session_id"]
    record = await _deployment(request).control_plane.create_task(definition)
    return json_response(record.task_id)


async def session_tasks(request: Request) -> Response:
    """The session's tasks as TaskDefinitions, oldest first."""
    cp = _deployment(request).control_plane
    session_id = request.path_params["session_id"]
    await cp.get_session(session_id)
    tasks, _ = await cp.list_tasks(session_id, limit=PAGE_MAX)
    return model_list_response(TaskDefinition, [t.to_definition() for t in tasks])


async def current_task(request: Request) -> Response:
    """The session's newest task (``null`` if it has none)."""
    cp = _deployment(request).control_plane
    session_id = request.path_params["session_id"]
    await cp.get_session(session_id)
    tasks, _ = await cp.list_tasks(session_id, limit=1, descending=True)
    return model_response(tasks[0].to_definition()) if tasks else json_response(None)


async def _session_task(request: Request) -> str:
    cp = _deployment(request).control_plane
    task = await cp.get_task(request.path_params["task_id"])
    if task.session_id != request.path_params["session_id"]:
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
    definition = EventDefinition.model_validate_json(await request.body())
    await _deployment(request).control_plane.send_event(task_id, definition.event_obj_str)
    return json_response(None)


def _state_key(request: Request) -> tuple[str, str]:
    return f"{_deployment(request).name}/session_state", request.path_params["session_id"]


async def get_state(request: Request) -> Response:
    """The session's free-form state dict."""
    cp = _deployment(request).control_plane
    await cp.get_session(request.path_params["session_id"])
    stored = await cp.records.store.get(*_state_key(request))
    return Response(stored.value if stored else b"{}", media_type="application/json")


async def set_state(request: Request) -> Response:
    """Replace the session's free-form state dict."""
    cp = _deployment(request).control_plane
    await cp.get_session(request.path_params["session_id"])
    state: Any = json.loads(await request.body() or b"{}")
    if not isinstance(state, dict):
        raise InvalidRequest("the session state must be a JSON object")
    await cp.records.store.put(*_state_key(request), json.dumps(state).encode())
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


def create_control_plane_app(deployment: Deployment, *, token: str | None = None) -> Starlette:
    """Llama Deploy 0.8's control-plane API over one running deployment.

    ``app.state.stopping`` is an asyncio.Event: set it to end the open result streams.
    """
    middleware = [Middleware(CatchAllMiddleware)]
    if token:
        middleware.append(Middleware(BearerTokenMiddleware, token=token))
    app = Starlette(routes=list(ROUTES), middleware=middleware, exception_handlers=exception_handlers)
    app.state.deployment = deployment
    app.state.registered = {}
    app.state.stopping = asyncio.Event()
    return app
