"""Deployments: list, get, create (multipart upload, as Llama Deploy's client sends it), delete,
and ours: service status, a state snapshot for dashboards, and the change feed."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.common import deployment_of, json_response, manager_of, model_list_response
from llamactl.server.apiserver.errors import Forbidden, UnsupportedMediaType, error_response
from llamactl.server.apiserver.multipart import read_form_file
from llamactl.server.apiserver.policy import DeploymentRoots
from llamactl.server.apiserver.streams import change_feed_sse
from llamactl.server.apiserver.validation import path_id, query_bool, query_int, query_param, resume_seq
from llamactl.server.config import DeploymentConfig, load_deployment_text
from llamactl.server.errors import Conflict, InvalidRequest, LlamactlError, NotFound, ShuttingDown
from llamactl.server.types import ServiceStatus, TaskStatus

__all__ = ["routes"]

log = logging.getLogger("llamactl.server.apiserver")

RECENT_TASKS = 50
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


async def list_deployments(request: Request) -> Response:
    """Every deployment: ``[{"name": ...}]``."""
    return json_response([{"name": n} for n in manager_of(request).names()])


async def get_deployment(request: Request) -> Response:
    """One deployment: ``{"name": ...}`` (404 if unknown, 503 while it starts)."""
    return json_response({"name": deployment_of(request).name})


def _base_path(request: Request) -> Path:
    """The folder the upload's relative paths resolve against: under one of the server's roots."""
    raw = query_param(request, "base_path") or os.getcwd()
    if "\x00" in raw or len(raw) > 4096:
        raise InvalidRequest(
            "base_path is not a folder path: pass the absolute folder of the deployment file"
        )
    base = Path(raw).expanduser()
    if not base.is_absolute():
        base = Path.cwd() / base
    roots: DeploymentRoots = request.app.state.roots
    resolved = roots.check(base)
    if not resolved.is_dir():
        raise InvalidRequest(
            f"base_path '{raw}' is not a folder on the server: pass the absolute folder that holds "
            "the deployment file (the server and its sources must share a filesystem)"
        )
    return resolved


def _upload_type(request: Request) -> str:
    """The upload's Content-Type: multipart/form-data (Llama Deploy's client, ours) or YAML."""
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    if media != "multipart/form-data" and media not in _YAML_TYPES:
        raise UnsupportedMediaType(
            "upload the deployment file as multipart/form-data in field 'config_file' (as `llamactl "
            "deploy` and Llama Deploy's client do), or as the whole body with `Content-Type: "
            "application/yaml`"
        )
    return content_type


def _load_config(content_type: str, body: bytes, base_path: Path) -> DeploymentConfig:
    multipart = content_type.partition(";")[0].strip().lower() == "multipart/form-data"
    raw = read_form_file(body, content_type, "config_file") if multipart else body
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the deployment file is not UTF-8 text: upload the YAML file") from None
    if not text.strip():
        raise InvalidRequest("the deployment file is empty: upload the YAML in field 'config_file'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_deployment_text(text, base_path=base_path, file="<uploaded deployment file>")
    for warning in caught:
        log.warning("%s", warning.message)
    return config


async def create_deployment(request: Request) -> Response:
    """Deploy the uploaded file; answers once every service has a ready replica.

    Query: ``base_path`` (folder relative paths resolve against), ``reload`` (replace a running
    deployment of that name), ``local`` (accepted for compatibility).
    """
    reload = query_bool(request, "reload")
    query_bool(request, "local")
    content_type = _upload_type(request)
    base_path = _base_path(request)
    config = _load_config(content_type, await request.body(), base_path)
    try:
        deployment = await manager_of(request).create(
            config, reload=reload, on_event=request.app.state.on_event
        )
    except (NotFound, Conflict, Forbidden, ShuttingDown):
        raise
    except TimeoutError as exc:
        return error_response(400, f"{exc}: check the service's logs, then deploy again")
    except LlamactlError as exc:
        return error_response(400, str(exc))
    return json_response({"name": deployment.name})


async def delete_deployment(request: Request) -> Response:
    """Stop a deployment; answers after its workers have finished their tasks and stopped."""
    name = path_id(request, "name", "deployment name")
    await manager_of(request).delete(name)
    return json_response({"name": name})


async def list_services(request: Request) -> Response:
    """The live status of each service: replicas, generation, tasks in flight, last error."""
    return model_list_response(ServiceStatus, deployment_of(request).services())


async def deployment_state(request: Request) -> Response:
    """A snapshot for dashboards; follow ``/changes`` from ``changes_seq`` to stay current.

    Counts come from the store's indexes: this costs the same at 10 tasks and at a million.
    """
    deployment = deployment_of(request)
    cp = deployment.control_plane
    changes_seq = await cp.records.store.log_length(cp.changes.stream)
    by_service = await cp.task_counts()
    counts = {status.value: 0 for status in TaskStatus}
    service_tasks: dict[str, dict[str, int]] = {}
    for service_id in cp.registry.service_ids():
        service_tasks[service_id] = {
            status.value: by_service.get(service_id, {}).get(status.value, 0) for status in TaskStatus
        }
    for statuses in by_service.values():
        for status, n in statuses.items():
            counts[status] = counts.get(status, 0) + n
    recent, _ = await cp.list_tasks(limit=RECENT_TASKS, descending=True)
    return json_response(
        {
            "deployment": deployment.name,
            "services": [s.model_dump(mode="json") for s in deployment.services()],
            "sessions": await cp.records.count_sessions(),
            "tasks": counts,
            "service_tasks": service_tasks,
            "recent_tasks": [t.model_dump(mode="json") for t in recent],
            "changes_seq": changes_seq,
            "health": deployment.health(),
        }
    )


async def changes(request: Request) -> Response:
    """The change feed as SSE; resume with ``Last-Event-ID`` or ``from_seq``."""
    deployment = deployment_of(request)
    from_seq = resume_seq(request, query_int(request, "from_seq"))
    state = request.app.state
    return change_feed_sse(
        deployment.control_plane, from_seq, state.keepalive, state.stopping, deployment.backends
    )


routes = [
    Route("/deployments/", list_deployments, methods=["GET"]),
    Route("/deployments/create", create_deployment, methods=["POST"]),
    Route("/deployments/{name}", get_deployment, methods=["GET"]),
    Route("/deployments/{name}", delete_deployment, methods=["DELETE"]),
    Route("/deployments/{name}/services", list_services, methods=["GET"]),
    Route("/deployments/{name}/state", deployment_state, methods=["GET"]),
    Route("/deployments/{name}/changes", changes, methods=["GET"]),
]
