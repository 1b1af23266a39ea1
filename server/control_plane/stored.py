"""The records as the control plane stores them: a task with its dispatch bookkeeping, a session
with whose turn it is, a page of a listing, and how a task is indexed (see ``records.py`` for
where each lives in the StateStore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from llamactl.server.state.base import Index
from llamactl.server.types import SessionDefinition, TaskRecord, TaskStatus

__all__ = ["Page", "SessionRecord", "StoredTask", "changed_index", "task_filter"]


class StoredTask(TaskRecord):
    """A TaskRecord plus what the control plane needs to hand it out exactly once."""

    dispatched: bool = False
    """True once the task's start message was published to its service."""
    cancel_requested: bool = False
    keep_context: bool = True
    """False for a ``tasks/run`` that named no session: its session's Context is not saved."""
    own_session: bool = False
    """Its session was made for it alone (a ``tasks/run`` that named none): it has no record,
    takes no other task and keeps no Context (older records read False: theirs exists)."""

    def public(self) -> TaskRecord:
        fields = {name: getattr(self, name) for name in TaskRecord.model_fields}
        return TaskRecord.model_construct(**fields)  # already valid: no need to validate again

    @property
    def sort(self) -> str:
        return f"{self.created_at:017.6f}:{self.task_id}"

    def index(self) -> Index:
        # A session of its own is known only to its task (no record, no other task): indexing the
        # task by it would write an index entry and a count row per task that no listing needs.
        return Index(
            sort=self.sort,
            fields={
                **({} if self.own_session else {"session": self.session_id}),
                "status": self.status.value,
                "service": self.service_id,
                "svc_status": f"{self.service_id}/{self.status.value}",
            },
        )


class SessionRecord(BaseModel):
    session_id: str
    created_at: float = 0.0
    implicit: bool = False
    """Made for one task that named no session: pruned with it."""
    active: str | None = None
    """The task handed out to its service and not finished yet (the session's turn)."""
    waiting: list[str] = Field(default_factory=list)
    """Tasks not handed out yet, oldest first: each waits for the one before it."""

    def index(self) -> Index:
        return Index(sort=f"{self.created_at:017.6f}:{self.session_id}", fields={"all": ""})

    def definition(self, task_ids: list[str]) -> SessionDefinition:
        return SessionDefinition(session_id=self.session_id, task_ids=task_ids, state={})


class Page(BaseModel):
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[Any]
    next_cursor: str | None = None


def task_filter(
    session_id: str | None, status: TaskStatus | None, service_id: str | None
) -> tuple[str, str | None, Callable[[StoredTask], bool]]:
    """The index to read and what to keep of it: the narrowest index, the rest filtered."""

    def keep(task: StoredTask) -> bool:
        return (
            (session_id is None or task.session_id == session_id)
            and (status is None or task.status is status)
            and (service_id is None or task.service_id == service_id)
        )

    if session_id is not None:
        return "session", session_id, keep
    if service_id is not None and status is not None:
        return "svc_status", f"{service_id}/{status.value}", keep
    if service_id is not None:
        return "service", service_id, keep
    if status is not None:
        return "status", status.value, keep
    return "status", None, keep


def changed_index(before: StoredTask, after: StoredTask) -> Index | None:
    """Only the index fields the change touched (the others keep their entries, and the record
    its sort: a task's sort never changes)."""
    old, new = before.index(), after.index()
    fields = {name: value for name, value in new.fields.items() if old.fields.get(name) != value}
    return Index(sort=None, fields=fields) if fields else None
