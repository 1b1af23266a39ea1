"""Every message of the dashboard, in one place.

Workers (``tui.feed``, ``tui.actions``) post the first group when something arrives from the server;
the widgets post the second group when the user picks something. The app routes both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from llamactl.client import DeploymentState
from llamactl.server.types import (
    ChangeEvent,
    EventEnvelope,
    ServiceStatus,
    SessionDefinition,
    TaskRecord,
    TaskWhere,
)

__all__ = [
    "ActionFailed",
    "Connected",
    "ContextSizesLoaded",
    "DeploymentsListed",
    "Disconnected",
    "FeedChanges",
    "ServicesLoaded",
    "SessionCreated",
    "SessionDeleted",
    "SessionPicked",
    "SnapshotLoaded",
    "StateLoaded",
    "TaskCancelled",
    "TaskCreated",
    "TaskEvents",
    "TaskEventsEnded",
    "TaskEventsInterrupted",
    "TaskLoaded",
    "TaskPicked",
    "TaskWhereAnswered",
]

# --- from the workers -------------------------------------------------------------------------


@dataclass
class Connected(Message):
    """The change feed is live (again)."""

    url: str
    deployment: str
    reconnected: bool
    """True when this ends a disconnection (the user is told)."""


@dataclass
class Disconnected(Message):
    """The server cannot be reached (or went away); the feed retries in ``retry_in`` seconds."""

    url: str
    reason: str
    retry_in: float
    attempt: int
    gone: bool = False
    """The server answers, but has no such deployment (deleted, or not deployed yet)."""


@dataclass
class SnapshotLoaded(Message):
    """A full picture to start from (first connection, or the server's state was reset)."""

    state: DeploymentState
    tasks: list[TaskRecord]
    sessions: list[SessionDefinition]
    reset: bool
    """True when it replaces data shown before (the server lost its change feed)."""


@dataclass
class StateLoaded(Message):
    """A fresh state snapshot: deployment-wide and per-service counters, services."""

    state: DeploymentState


@dataclass
class ServicesLoaded(Message):
    services: list[ServiceStatus]


@dataclass
class FeedChanges(Message):
    """A batch of change-feed entries, in order (batched so a busy server costs few redraws)."""

    changes: list[ChangeEvent]


@dataclass
class ContextSizesLoaded(Message):
    sizes: dict[str, int | None]


@dataclass
class TaskEvents(Message):
    """New events of a task's log, in seq order."""

    task_id: str
    events: list[EventEnvelope]


@dataclass
class TaskEventsEnded(Message):
    """The task has finished: its log is complete; ``record`` is its final record."""

    task_id: str
    record: TaskRecord | None


@dataclass
class TaskEventsInterrupted(Message):
    """The task's stream dropped; it resumes from the last event when the server is back."""

    task_id: str
    reason: str
    resumable: bool
    """The connection dropped (resume once it is back), rather than the task being refused."""


@dataclass
class TaskLoaded(Message):
    """A task's full record (on show, opened by id, or after a change)."""

    record: TaskRecord
    open: bool = False
    """Show it in the events view (the user asked for it)."""


@dataclass
class TaskCreated(Message):
    """A task run from the dashboard was accepted."""

    record: TaskRecord


@dataclass
class TaskCancelled(Message):
    record: TaskRecord


@dataclass
class TaskWhereAnswered(Message):
    """Where a running task's code is, and its stacks, as its worker answered."""

    answer: TaskWhere


@dataclass
class SessionCreated(Message):
    session: SessionDefinition


@dataclass
class SessionDeleted(Message):
    session_id: str


@dataclass
class DeploymentsListed(Message):
    names: list[str]
    current: str | None


@dataclass
class ActionFailed(Message):
    """A user's action could not be done; ``message`` says why and what to do."""

    action: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# --- from the widgets -------------------------------------------------------------------------


@dataclass
class TaskPicked(Message):
    """The user moved to (``open=False``) or opened (``open=True``) a task in a table."""

    task_id: str
    open: bool = False


@dataclass
class SessionPicked(Message):
    """The user picked a session (None: all tasks)."""

    session_id: str | None
