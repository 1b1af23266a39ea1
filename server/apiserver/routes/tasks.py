"""Tasks: run, create, list, get, cancel, their event streams, events sent in, and results.

``tasks/run`` and ``tasks/create`` are the hot path: no logging, one model parse, bytes out.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llamactl.server.apiserver.common import (
    deployment_of,
    json_response,
    model_response,
    paged_response,
    unless_client_leaves,
)
from llamactl.server.apiserver.errors import error_response
from llamactl.server.apiserver.streams import task_events_ndjson, task_events_sse, wants_sse
from llamactl.server.apiserver.validation import (
    event_definition,
    page_params,
    path_id,
    query_bool,
    query_id,
    query_int,
    query_param,
    query_seconds,
    resume_seq,
    task_definition,
)
from llamactl.server.errors import InvalidRequest, TaskWaitTimeout
from llamactl.server.types import TaskDefinition, TaskRecord, TaskStatus

__all__ = ["routes"]

_JSON = "application/json"


async def _definition(request: Request) -> TaskDefinition:
    return await task_definition(request, session_id=query_id(request, "session_id", "session id"))


def _task_id(request: Request) -> str:
    return path_id(request, "task_id", "task id")


async def run_task(request: Request) -> Response:
    """Run a task and answer the workflow's result as JSON once it has finished (424 if it failed).

    It waits at most ``timeout`` seconds (default: the service's timeout plus a minute, else the
    deployment's ``wait-timeout``), then answers 504 with the task's id and status: it goes on.
    """
    cp = deployment_of(request).control_plane
    timeout = query_seconds(request, "timeout")
    record = await cp.run_task(await _definition(request), timeout=timeout)
    if record.status is TaskStatus.COMPLETED:
        return Response(json.dumps(record.result).encode(), media_type=_JSON)
    detail = record.error or f"the task was {record.status.value}"
    return error_response(424, detail, task_id=record.task_id, status=record.status.value)


async def create_task(request: Request) -> Response:
    """Queue a task; answers at once with its TaskDefinition (ids filled in)."""
    cp = deployment_of(request).control_plane
    record = await cp.create_task(await _definition(request))
    return Response(record.to_definition().model_dump_json().encode(), media_type=_JSON)


async def list_tasks(request: Request) -> Response:
    """Tasks as TaskRecords, oldest first (``order=desc``: newest first), a page at a time.

    Filters: ``session_id``, ``status``, ``service_id``. Pages: ``limit`` (default 1000) and
    ``cursor`` (from the ``X-Next-Cursor`` header of the previous page, sent while more remain).
    """
    cp = deployment_of(request).control_plane
    session_id = query_id(request, "session_id", "session id")
    service_id = query_id(request, "service_id", "service id")
    limit, cursor, descending = page_params(request)
    wanted = query_param(request, "status")
    status: TaskStatus | None = None
    if wanted:
        try:
            status = TaskStatus(wanted.lower())
        except ValueError:
            known = ", ".join(s.value for s in TaskStatus)
            shown = repr(wanted) if len(wanted) <= 40 and wanted.isprintable() else "given"
            raise InvalidRequest(f"unknown task status {shown}: use one of {known}") from None
    tasks, next_cursor = await cp.list_tasks(
        session_id,
        status=status,
        service_id=service_id,
        limit=limit,
        cursor=cursor,
        descending=descending,
    )
    return paged_response(TaskRecord, tasks, next_cursor)


async def get_task(request: Request) -> Response:
    """One task's record: status, attempts, replica, timings, result or error."""
    cp = deployment_of(request).control_plane
    return model_response(await cp.get_task(_task_id(request)))


async def cancel_task(request: Request) -> Response:
    """Cancel a task (at once if it had not started; else its worker is asked)."""
    cp = deployment_of(request).control_plane
    return model_response(await cp.cancel_task(_task_id(request)))


async def stream_events(request: Request) -> Response:
    """The task's events until it finishes: NDJSON, or SSE with ``Accept: text/event-stream``."""
    cp = deployment_of(request).control_plane
    task_id = _task_id(request)
    query_id(request, "session_id", "session id")
    from_seq = query_int(request, "from_seq")
    sse = wants_sse(request)
    start = resume_seq(request, from_seq) if sse else from_seq or 0
    raw_event = query_bool(request, "raw_event")
    await cp.get_task(task_id)  # 404 now, before the stream starts
    stopping = request.app.state.stopping
    if sse:
        return task_events_sse(cp, task_id, start, request.app.state.keepalive, stopping)
    return task_events_ndjson(cp, task_id, start, raw_event, stopping)


async def send_event(request: Request) -> Response:
    """Send a serialized workflows Event into a running task (human in the loop)."""
    cp = deployment_of(request).control_plane
    task_id = _task_id(request)
    query_id(request, "session_id", "session id")
    definition = await event_definition(request)
    await cp.send_event(task_id, definition.event_obj_str)
    return model_response(definition)


async def task_where(request: Request) -> Response:
    """Where a running task's code is now, as its worker answers.

    ``where`` names the innermost line of the service's own code the run waits on, ``stacks``
    holds each stack. 409 for a task queued or ended, 504 when its worker does not answer
    within 10 s (its event loop blocked).
    """
    cp = deployment_of(request).control_plane
    return model_response(await cp.task_where(_task_id(request)))


async def task_result(request: Request) -> Response:
    """The TaskResult once the task has finished (waits); ``null`` if ``timeout`` runs out first.

    Without ``timeout`` it waits as long as ``tasks/run`` would, then answers 504 with the task's
    id and status.
    """
    cp = deployment_of(request).control_plane
    task_id = _task_id(request)
    query_id(request, "session_id", "session id")
    timeout = query_seconds(request, "timeout")
    if timeout is None:
        bound = cp.wait_bound((await cp.get_task(task_id)).service_id)
        try:
            await unless_client_leaves(request, cp.wait_for_task(task_id, timeout=bound))
        except TimeoutError:
            raise TaskWaitTimeout(task_id, (await cp.get_task(task_id)).status.value, bound) from None
    else:
        try:
            await unless_client_leaves(request, cp.wait_for_task(task_id, timeout=timeout))
        except TimeoutError:
            return json_response(None)
    result = await cp.task_result(task_id)
    return json_response(None) if result is None else model_response(result)


_BASE = "/deployments/{name}/tasks"

routes = [
    Route(f"{_BASE}/run", run_task, methods=["POST"]),
    Route(f"{_BASE}/create", create_task, methods=["POST"]),
    Route(_BASE, list_tasks, methods=["GET"]),
    Route(f"{_BASE}/{{task_id}}", get_task, methods=["GET"]),
    Route(f"{_BASE}/{{task_id}}/cancel", cancel_task, methods=["POST"]),
    Route(f"{_BASE}/{{task_id}}/events", stream_events, methods=["GET"]),
    Route(f"{_BASE}/{{task_id}}/events", send_event, methods=["POST"]),
    Route(f"{_BASE}/{{task_id}}/results", task_result, methods=["GET"]),
    Route(f"{_BASE}/{{task_id}}/where", task_where, methods=["GET"]),
]
