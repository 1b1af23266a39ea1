"""Wire models: what crosses the HTTP API and what the client SDK parses.

The first group keeps Llama Deploy's JSON shapes field for field (``TaskDefinition``,
``TaskResult``, ``SessionDefinition``, ``EventDefinition``, ``ServiceDefinition``, ``Status``,
``DeploymentDefinition``) so its clients work unchanged. The second group is ours: task
status and records, the event envelope, replica/service status and the change feed.

This module depends on pydantic and ``ids`` only, so ``llamactl.client`` can import it cheaply.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from llamactl.server.ids import new_id

__all__ = [
    "ASKING",
    "ChangeEvent",
    "DeploymentDefinition",
    "EventDefinition",
    "EventEnvelope",
    "ReplicaState",
    "ReplicaStatus",
    "ServiceDefinition",
    "ServiceStatus",
    "SessionDefinition",
    "Status",
    "StatusEnum",
    "TaskDefinition",
    "TaskRecord",
    "TaskResult",
    "TaskStatus",
    "TaskWhere",
    "asks_for_input",
    "shown_status",
]


# --- Llama Deploy compatible ------------------------------------------------------------------


class TaskDefinition(BaseModel):
    """A task as Llama Deploy's clients send it.

    ``input`` is a JSON-encoded object whose keys become the workflow's run kwargs.
    """

    input: str = ""
    task_id: str = Field(default_factory=new_id)
    session_id: str | None = None
    service_id: str | None = None


class TaskResult(BaseModel):
    """The final result of a task. ``result`` is the workflow's result as a string."""

    task_id: str
    history: list[Any] = Field(default_factory=list)
    result: str
    data: dict[str, Any] = Field(default_factory=dict)


class SessionDefinition(BaseModel):
    """A session: consecutive tasks in it share the workflow Context."""

    session_id: str = Field(default_factory=new_id)
    task_ids: list[str] = Field(default_factory=list)
    state: dict[str, Any] = Field(default_factory=dict)


class EventDefinition(BaseModel):
    """An event sent into a running task (human in the loop).

    ``event_obj_str`` is ``workflows.context.serializers.JsonSerializer().serialize(event)``.
    """

    service_id: str
    event_obj_str: str


class ServiceDefinition(BaseModel):
    """A service as Llama Deploy's control plane registers it."""

    service_name: str
    description: str = ""
    prompt: list[Any] = Field(default_factory=list)
    host: str | None = None
    port: int | None = None


class StatusEnum(StrEnum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    DOWN = "Down"


class Status(BaseModel):
    status: StatusEnum
    status_message: str = ""
    max_deployments: int | None = None
    deployments: list[str] | None = None


class DeploymentDefinition(BaseModel):
    name: str


# --- ours ---------------------------------------------------------------------------------------


class TaskStatus(StrEnum):
    """The task status machine: queued -> running -> completed | failed | cancelled.

    A task whose worker died goes from running back to queued (its attempt grows by one).
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


ASKING = "asking"
"""How lists show a running task whose workflow waits for a person's answer."""


def shown_status(status: TaskStatus, waiting_for_answer: bool) -> str:
    """A task's status as lists show it: :data:`ASKING` while it waits for a person's answer."""
    return ASKING if waiting_for_answer and not status.is_final else status.value


class TaskRecord(BaseModel):
    """Everything the control plane knows about one task."""

    task_id: str
    deployment: str
    service_id: str
    session_id: str
    own_session: bool = False
    """Its session was made for it alone (a ``tasks/run`` that named none): that session has no
    record (it is not listed), takes no other task and keeps no Context. Older records read
    False: theirs exists."""
    input: str = ""
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    waiting_for_answer: bool = False
    """Its workflow waits for a person's answer: its last event asked a question (an
    InputRequiredEvent, see :func:`asks_for_input`) and no event sent in has reached it since."""
    replica_id: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    """The workflow's result as JSON (None until completed)."""
    error: str | None = None
    """One line: the exception type and message of a failed task."""
    traceback: str | None = None
    """The last frames of the traceback of a failed task."""

    def to_definition(self) -> TaskDefinition:
        return TaskDefinition(
            input=self.input, task_id=self.task_id, session_id=self.session_id, service_id=self.service_id
        )


class TaskWhere(BaseModel):
    """Where a running task's code is now, as its worker answered."""

    task_id: str
    replica_id: str | None = None
    """The worker that runs it."""
    where: str = ""
    """``in fetch (app.py line 12)``: the innermost line of the service's own code the run waits
    on (a workflow: each step in progress); empty when the worker cannot tell."""
    stacks: str | None = None
    """Each place's stack, as a traceback prints it."""


def asks_for_input(event_type: str) -> bool:
    """Whether an event of this ``type`` asks a person something: a workflows
    ``InputRequiredEvent``, or a subclass named so (a human-in-the-loop question)."""
    return event_type.endswith("InputRequiredEvent")


class EventEnvelope(BaseModel):
    """One event in a task's log, as streamed to clients.

    ``value`` is the event's fields, ``type`` its class name, ``qualified_name`` its import path,
    ``seq`` its 0-based position in the task's log and ``attempt`` the delivery attempt that
    produced it (events of an attempt whose worker died stay in the log).
    """

    value: Any
    type: str
    qualified_name: str
    seq: int = 0
    attempt: int = 1


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    CRASHED = "crashed"


class ReplicaStatus(BaseModel):
    replica_id: str
    service_id: str
    generation: int = 1
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    host: str | None = None
    in_flight: int = 0
    max_concurrency: int = 1
    concurrency_limit: int | None = None
    """How many tasks it starts at once right now (at most ``max_concurrency``; fewer while its
    tasks compute), as of its last heartbeat."""
    started_at: float = Field(default_factory=time.time)
    last_heartbeat: float | None = None
    last_error: str | None = None
    restarts: int = 0


class ServiceStatus(BaseModel):
    service_id: str
    name: str
    generation: int = 1
    replicas: list[ReplicaStatus] = Field(default_factory=list)
    desired_replicas: int = 1
    in_flight: int = 0
    last_error: str | None = None
    last_reload_at: float | None = None
    last_reload_error: str | None = None
    last_reload_seconds: float | None = None
    """Seconds the last reload took to get the new generation ready (or to give up)."""

    @property
    def ready(self) -> bool:
        return any(r.state is ReplicaState.READY for r in self.replicas)


class ChangeEvent(BaseModel):
    """One entry of a deployment's change feed (services up/down, task status changes, ...).

    ``kind`` is one of ``service.up``, ``service.down``, ``service.added``, ``service.removed``,
    ``service.reloaded``, ``service.reload_failed``, ``replica.up``, ``replica.draining``,
    ``replica.down``, ``replica.removed``, ``session.created``, ``session.deleted``, ``task.status``,
    ``queue.unreachable``, ``queue.reachable``; and ``health``, a notice outside the log (``seq`` -1)
    that the change feed's stream sends when a backend's outage begins or ends.
    """

    kind: str
    deployment: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time)
    seq: int = 0
