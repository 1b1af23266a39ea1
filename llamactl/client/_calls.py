"""Every endpoint of docs/http-api.md as a `Call`: the one description both clients send."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from llamactl.client.models import DeploymentState
from llamactl.server.types import (
    DeploymentDefinition,
    EventDefinition,
    ServiceStatus,
    SessionDefinition,
    Status,
    TaskDefinition,
    TaskRecord,
    TaskResult,
    TaskStatus,
    TaskWhere,
)

from ._base import Call, _parse_nothing

HUMAN_RESPONSE_EVENT = "workflows.events.HumanResponseEvent"


def _seg(value: str) -> str:
    return quote(value, safe="")


def _model(cls: type[BaseModel]) -> Any:
    return cls.model_validate


def _list_of(cls: type[Any]) -> Any:
    return TypeAdapter(list[cls]).validate_python  # type: ignore[valid-type]


def _identity(value: Any) -> Any:
    return value


def status() -> Call[Status]:
    return Call("GET", "/status/", _model(Status))


def deployments_list() -> Call[list[DeploymentDefinition]]:
    return Call("GET", "/deployments/", _list_of(DeploymentDefinition))


def deployments_get(name: str) -> Call[DeploymentDefinition]:
    return Call("GET", f"/deployments/{_seg(name)}", _model(DeploymentDefinition))


def deployments_create(
    path: str | Path, *, reload: bool, base_path: str | Path | None
) -> Call[DeploymentDefinition]:
    file = Path(path)
    folder = Path(base_path) if base_path is not None else file.resolve().parent
    return Call(
        "POST",
        "/deployments/create",
        _model(DeploymentDefinition),
        params={"base_path": str(folder.resolve()), "reload": reload},
        files={"config_file": (file.name, file.read_bytes(), "application/x-yaml")},
        waits=True,
    )


def deployments_delete(name: str) -> Call[DeploymentDefinition]:
    return Call("DELETE", f"/deployments/{_seg(name)}", _model(DeploymentDefinition), waits=True)


def _d(name: str) -> str:
    return f"/deployments/{_seg(name)}"


def services(name: str) -> Call[list[ServiceStatus]]:
    return Call("GET", f"{_d(name)}/services", _list_of(ServiceStatus))


def state(name: str) -> Call[DeploymentState]:
    return Call("GET", f"{_d(name)}/state", _model(DeploymentState))


def task_definition(
    input: Mapping[str, Any] | None, service: str | None, session_id: str | None, task_id: str | None = None
) -> dict[str, Any]:
    ids = {"task_id": task_id} if task_id is not None else {}
    definition = TaskDefinition(
        input=json.dumps(dict(input or {})), service_id=service, session_id=session_id, **ids
    )
    return definition.model_dump(mode="json")


def tasks_run(name: str, body: dict[str, Any], timeout: float | None = None) -> Call[Any]:
    return Call(
        "POST", f"{_d(name)}/tasks/run", _identity, params={"timeout": timeout}, json=body, waits=True
    )


def tasks_create(name: str, body: dict[str, Any]) -> Call[TaskDefinition]:
    return Call("POST", f"{_d(name)}/tasks/create", _model(TaskDefinition), json=body)


def tasks_list(
    name: str,
    session_id: str | None,
    status: TaskStatus | str | None,
    *,
    service_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    newest_first: bool = False,
) -> Call[list[TaskRecord]]:
    params = {
        "session_id": session_id,
        "status": None if status is None else TaskStatus(status).value,
        "service_id": service_id,
        "limit": limit,
        "cursor": cursor,
        "order": "desc" if newest_first else None,
    }
    return Call("GET", f"{_d(name)}/tasks", _list_of(TaskRecord), params=params)


def _t(name: str, task_id: str) -> str:
    return f"{_d(name)}/tasks/{_seg(task_id)}"


def tasks_get(name: str, task_id: str) -> Call[TaskRecord]:
    return Call("GET", _t(name, task_id), _model(TaskRecord))


def tasks_cancel(name: str, task_id: str) -> Call[TaskRecord]:
    return Call("POST", f"{_t(name, task_id)}/cancel", _model(TaskRecord))


def tasks_send_event(name: str, task_id: str, service_id: str, event_obj_str: str) -> Call[EventDefinition]:
    body = EventDefinition(service_id=service_id, event_obj_str=event_obj_str).model_dump(mode="json")
    return Call("POST", f"{_t(name, task_id)}/events", _model(EventDefinition), json=body)


def tasks_where(name: str, task_id: str) -> Call[TaskWhere]:
    # The worker has 10 s to answer: longer than a default read timeout may be.
    return Call("GET", f"{_t(name, task_id)}/where", _model(TaskWhere), waits=True)


def _optional_result(value: Any) -> TaskResult | None:
    return None if value is None else TaskResult.model_validate(value)


def tasks_result(name: str, task_id: str, timeout: float | None) -> Call[TaskResult | None]:
    return Call(
        "GET", f"{_t(name, task_id)}/results", _optional_result, params={"timeout": timeout}, waits=True
    )


def events_path(name: str, task_id: str) -> str:
    return f"{_t(name, task_id)}/events"


def changes_path(name: str) -> str:
    return f"{_d(name)}/changes"


def sessions_list(
    name: str, *, limit: int | None = None, cursor: str | None = None, newest_first: bool = False
) -> Call[list[SessionDefinition]]:
    params = {"limit": limit, "cursor": cursor, "order": "desc" if newest_first else None}
    return Call("GET", f"{_d(name)}/sessions", _list_of(SessionDefinition), params=params)


def sessions_create(name: str) -> Call[SessionDefinition]:
    return Call("POST", f"{_d(name)}/sessions", _model(SessionDefinition))


def sessions_get(name: str, session_id: str) -> Call[SessionDefinition]:
    return Call("GET", f"{_d(name)}/sessions/{_seg(session_id)}", _model(SessionDefinition))


def sessions_delete(name: str, session_id: str) -> Call[None]:
    return Call("DELETE", f"{_d(name)}/sessions/{_seg(session_id)}", _parse_nothing)


def event_obj_str(event: Any, qualified_name: str = HUMAN_RESPONSE_EVENT) -> str:
    """What ``POST .../events`` expects in ``event_obj_str`` for ``event``.

    ``event`` is either already that string, a workflows ``Event`` (serialized as the workflow's own
    ``JsonSerializer`` does), or a mapping of the event's fields (an instance of ``qualified_name``).
    """
    if isinstance(event, str):
        return event
    if isinstance(event, Mapping):
        return json.dumps({"__is_pydantic": True, "value": dict(event), "qualified_name": qualified_name})
    if isinstance(event, BaseModel):
        # workflows is heavy: only a caller who already holds one of its events pays for it
        from workflows.context.serializers import JsonSerializer  # noqa: PLC0415

        return str(JsonSerializer().serialize(event))
    raise TypeError(
        f"cannot send {type(event).__name__} as an event: pass a workflows Event, a dict or a str"
    )


# --- the dashboard's route (docs/http-api.md) ----------------------------------------------------


def _context_sizes(value: Any) -> dict[str, int | None]:
    sizes = value.get("contexts") if isinstance(value, dict) else None
    if not isinstance(sizes, dict):
        raise TypeError(f"unexpected answer to a contexts request: {value!r}")
    return {str(k): (None if v is None else int(v)) for k, v in sizes.items()}


def context_sizes(name: str, session_ids: list[str]) -> Call[dict[str, int | None]]:
    return Call(
        "GET", f"{_d(name)}/dashboard/contexts", _context_sizes, params={"session_id": list(session_ids)}
    )
