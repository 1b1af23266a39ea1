"""The records as the control plane stores them: a task with its dispatch bookkeeping, a session
with whose turn it is, a page of a listing, and how a task is indexed (see ``records.py`` for
where each lives in the StateStore)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from llamactl.server.state.base import Index
from llamactl.server.types import SessionDefinition, TaskRecord, TaskStatus

__all__ = ["Page", "SessionRecord", "StoredTask", "TaskFilter", "changed_index", "task_filter"]

_M = TypeVar("_M", bound=BaseModel)
_PUBLIC = tuple(TaskRecord.model_fields)
_PUBLIC_SET = frozenset(_PUBLIC)


def _assemble(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """An instance of ``cls`` (no private attributes, no extras) from values already valid, set
    up as pydantic's own ``__copy__`` sets one up. ``model_construct`` and ``model_copy`` look at
    defaults, aliases and extras on every call: 13 and 3 µs per task record against 4 and 2 here,
    and a task is copied or made public several times on its way."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", fields_set)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class StoredTask(TaskRecord):
    """A TaskRecord plus what the control plane needs to hand it out exactly once."""

    dispatched: bool = False
    """True once the task's start message was published to its service."""
    cancel_requested: bool = False
    keep_context: bool = True
    """False for a ``tasks/run`` that named no session: its session's Context is not saved."""
    resume_from: int = 0
    """The attempt whose question the task goes on from (its worker stopped while it waited for
    an answer: see ``protocol``); 0 when it runs from its start. Its resume point is kept beside
    the record (``ControlPlaneRecords.resume_ns``)."""

    def public(self) -> TaskRecord:
        """The TaskRecord part (already valid: not validated again)."""
        values = self.__dict__
        return _assemble(
            TaskRecord, {name: values[name] for name in _PUBLIC}, self.__pydantic_fields_set__ & _PUBLIC_SET
        )

    def clone(self) -> StoredTask:
        """A shallow copy, as ``model_copy()`` makes it (its fields' objects are shared)."""
        return _assemble(StoredTask, self.__dict__.copy(), set(self.__pydantic_fields_set__))

    @property
    def sort(self) -> str:
        return f"{self.created_at:017.6f}:{self.task_id}"

    def index(self) -> Index:
        return Index(sort=self.sort, fields=self.index_fields())

    def index_fields(self) -> dict[str, str]:
        """The indexed fields and their values (the sort string aside)."""
        # A session of its own is known only to its task (no record, no other task): indexing the
        # task by it would write an index entry and a count row per task that no listing needs.
        # Status alone and service alone are read through ``svc_status`` (see task_filter): each
        # field more cost the task an index entry and a counter on every change.
        fields = {"svc_status": f"{self.service_id}/{self.status.value}"}
        if not self.own_session:
            fields["session"] = self.session_id
        return fields


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


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which index entries a task listing reads, and what it keeps of them."""

    field: str
    """``session`` or ``svc_status``."""
    value: str | None
    """The one value to read (None: any), unless :attr:`pick` picks several."""
    pick: Callable[[str], bool] | None
    """Which of the ``svc_status`` values the counts know to read and merge."""
    keep: Callable[[StoredTask], bool]


def task_filter(session_id: str | None, status: TaskStatus | None, service_id: str | None) -> TaskFilter:
    """The narrowest index to read, the rest filtered. A status or a service alone reads the
    ``svc_status`` values that end or start with it (the tasks are indexed by the pair only)."""

    def keep(task: StoredTask) -> bool:
        return (
            (session_id is None or task.session_id == session_id)
            and (status is None or task.status is status)
            and (service_id is None or task.service_id == service_id)
        )

    if session_id is not None:
        return TaskFilter("session", session_id, None, keep)
    if service_id is not None and status is not None:
        return TaskFilter("svc_status", f"{service_id}/{status.value}", None, keep)
    if service_id is not None:
        return TaskFilter("svc_status", None, lambda v: v.rpartition("/")[0] == service_id, keep)
    if status is not None:
        return TaskFilter("svc_status", None, lambda v: v.rpartition("/")[2] == status.value, keep)
    return TaskFilter("svc_status", None, None, keep)


def changed_index(before: StoredTask, after: StoredTask) -> Index | None:
    """Only the index fields the change touched (the others keep their entries, and the record
    its sort: a task's sort never changes)."""
    old = before.index_fields()
    fields = {name: value for name, value in after.index_fields().items() if old.get(name) != value}
    return Index(sort=None, fields=fields) if fields else None
