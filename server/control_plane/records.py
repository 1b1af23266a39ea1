"""How the control plane keeps tasks, sessions, Contexts and event logs in a StateStore.

Layout (all values JSON):

* ns ``<deployment>/tasks``, key task id: a :class:`~server.types.TaskRecord` plus dispatch bookkeeping.
* ns ``<deployment>/sessions``, key session id: ``{"session_id", "task_ids", "created_at"}``.
* ns ``<deployment>/contexts``, key session id: the workflow ``Context.to_dict()`` of the session.
* log ``<deployment>/events/<task id>``: the task's :class:`~server.types.EventEnvelope` s (offset = seq).
* log ``<deployment>/changes``: the change feed.

Updates are read-modify-write under compare-and-set, so several control planes sharing one store
cannot lose each other's writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from server.errors import SessionNotFound, StateStoreError, TaskNotFound
from server.state.base import StateStore
from server.types import SessionDefinition, TaskRecord

__all__ = ["ControlPlaneRecords", "SessionRecord", "StoredTask"]

_MAX_CAS_RETRIES = 100


class StoredTask(TaskRecord):
    """A TaskRecord plus what the control plane needs to hand it out exactly once."""

    dispatched: bool = False
    """True once the task's start message was published to its service."""
    cancel_requested: bool = False

    def public(self) -> TaskRecord:
        return TaskRecord.model_validate(self.model_dump(exclude={"dispatched", "cancel_requested"}))


class SessionRecord(BaseModel):
    session_id: str
    task_ids: list[str] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)

    def definition(self) -> SessionDefinition:
        return SessionDefinition(session_id=self.session_id, task_ids=list(self.task_ids), state={})


class ControlPlaneRecords:
    """Typed access to one deployment's records in a StateStore."""

    def __init__(self, store: StateStore, deployment: str) -> None:
        self.store = store
        self.deployment = deployment
        self._tasks_ns = f"{deployment}/tasks"
        self._sessions_ns = f"{deployment}/sessions"
        self._contexts_ns = f"{deployment}/contexts"
        self.changes_stream = f"{deployment}/changes"

    def events_stream(self, task_id: str) -> str:
        return f"{self.deployment}/events/{task_id}"

    # --- tasks -------------------------------------------------------------------------------

    async def insert_task(self, task: StoredTask) -> None:
        version = await self.store.cas(self._tasks_ns, task.task_id, _dump(task), None)
        if version is None:
            raise StateStoreError(f"task id '{task.task_id}' is already taken: send a new task id")

    async def get_task(self, task_id: str) -> StoredTask:
        found = await self.store.get(self._tasks_ns, task_id)
        if found is None:
            raise TaskNotFound(task_id, self.deployment)
        return StoredTask.model_validate_json(found.value)

    async def find_task(self, task_id: str) -> StoredTask | None:
        found = await self.store.get(self._tasks_ns, task_id)
        return None if found is None else StoredTask.model_validate_json(found.value)

    async def update_task(self, task_id: str, change: Callable[[StoredTask], bool]) -> StoredTask:
        """Apply ``change`` under compare-and-set; it returns False to leave the record as it is."""
        for _ in range(_MAX_CAS_RETRIES):
            found = await self.store.get(self._tasks_ns, task_id)
            if found is None:
                raise TaskNotFound(task_id, self.deployment)
            task = StoredTask.model_validate_json(found.value)
            if not change(task):
                return task
            if await self.store.cas(self._tasks_ns, task_id, _dump(task), found.version) is not None:
                return task
        raise StateStoreError(f"task '{task_id}' kept changing under us: too much contention, try again")

    async def list_tasks(self) -> list[StoredTask]:
        tasks: list[StoredTask] = []
        after: str | None = None
        while True:
            page = await self.store.list(self._tasks_ns, after=after, limit=500)
            tasks.extend(StoredTask.model_validate_json(v.value) for _, v in page)
            if len(page) < 500:
                return tasks
            after = page[-1][0]

    # --- sessions ----------------------------------------------------------------------------

    async def create_session(self, session_id: str) -> tuple[SessionRecord, bool]:
        """Create the session if it does not exist; return it and whether it was created."""
        record = SessionRecord(session_id=session_id)
        if await self.store.cas(self._sessions_ns, session_id, _dump(record), None) is not None:
            return record, True
        return await self.get_session(session_id), False

    async def get_session(self, session_id: str) -> SessionRecord:
        found = await self.store.get(self._sessions_ns, session_id)
        if found is None:
            raise SessionNotFound(session_id, self.deployment)
        return SessionRecord.model_validate_json(found.value)

    async def add_task_to_session(self, session_id: str, task_id: str) -> SessionRecord:
        for _ in range(_MAX_CAS_RETRIES):
            found = await self.store.get(self._sessions_ns, session_id)
            if found is None:
                raise SessionNotFound(session_id, self.deployment)
            record = SessionRecord.model_validate_json(found.value)
            record.task_ids.append(task_id)
            if await self.store.cas(self._sessions_ns, session_id, _dump(record), found.version) is not None:
                return record
        raise StateStoreError(f"session '{session_id}' kept changing under us: try again")

    async def list_sessions(self) -> list[SessionRecord]:
        sessions: list[SessionRecord] = []
        after: str | None = None
        while True:
            page = await self.store.list(self._sessions_ns, after=after, limit=500)
            sessions.extend(SessionRecord.model_validate_json(v.value) for _, v in page)
            if len(page) < 500:
                return sessions
            after = page[-1][0]

    async def delete_session(self, session_id: str) -> SessionRecord:
        record = await self.get_session(session_id)
        await self.store.delete(self._sessions_ns, session_id)
        await self.store.delete(self._contexts_ns, session_id)
        return record

    # --- contexts ----------------------------------------------------------------------------

    async def get_context(self, session_id: str) -> dict[str, Any] | None:
        found = await self.store.get(self._contexts_ns, session_id)
        if found is None:
            return None
        value: dict[str, Any] = json.loads(found.value)
        return value

    async def save_context(self, session_id: str, context: dict[str, Any]) -> None:
        await self.store.put(self._contexts_ns, session_id, json.dumps(context).encode())


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
