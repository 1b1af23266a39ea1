"""How the control plane keeps tasks, sessions, Contexts and event logs in a StateStore.

Layout (all values JSON):

* ns ``<deployment>/tasks``, key task id: a :class:`~llamactl.server.types.TaskRecord` plus dispatch
  bookkeeping.
* ns ``<deployment>/sessions``, key session id: ``{"session_id", "task_ids", "created_at"}``.
* ns ``<deployment>/contexts``, key session id: the workflow ``Context.to_dict()`` of the session.
* log ``<deployment>/events/<task id>``: the task's :class:`~llamactl.server.types.EventEnvelope` s
  (offset = seq).
* log ``<deployment>/changes``: the change feed.

Updates are compare-and-set against the version last seen, so several control planes sharing one
store cannot lose each other's writes. Records this control plane has read or written stay in a
bounded cache with their version: an update costs one write (no read first) unless another writer
got there in between, in which case the record is read again and the change re-applied.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from llamactl.server.errors import SessionNotFound, StateStoreError, TaskExists, TaskNotFound
from llamactl.server.state.base import StateStore
from llamactl.server.types import SessionDefinition, TaskRecord

__all__ = ["ControlPlaneRecords", "SessionRecord", "StoredTask"]

_MAX_CAS_RETRIES = 100
_CACHE_SIZE = 20_000

M = TypeVar("M", bound=BaseModel)


class StoredTask(TaskRecord):
    """A TaskRecord plus what the control plane needs to hand it out exactly once."""

    dispatched: bool = False
    """True once the task's start message was published to its service."""
    cancel_requested: bool = False

    def public(self) -> TaskRecord:
        fields = {name: getattr(self, name) for name in TaskRecord.model_fields}
        return TaskRecord.model_construct(**fields)  # already valid: no need to validate again


class SessionRecord(BaseModel):
    session_id: str
    task_ids: list[str] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)

    def definition(self) -> SessionDefinition:
        return SessionDefinition(session_id=self.session_id, task_ids=list(self.task_ids), state={})


class _Collection(Generic[M]):
    """One namespace of JSON records with a bounded cache of (record, version)."""

    def __init__(
        self, store: StateStore, ns: str, model: type[M], missing: Callable[[str], Exception]
    ) -> None:
        self._store = store
        self._ns = ns
        self._model = model
        self._missing = missing
        self._cache: OrderedDict[str, tuple[M, int]] = OrderedDict()

    def _remember(self, key: str, record: M, version: int) -> None:
        self._cache[key] = (record, version)
        self._cache.move_to_end(key)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _load(self, key: str) -> tuple[M, int] | None:
        found = await self._store.get(self._ns, key)
        if found is None:
            self._cache.pop(key, None)
            return None
        record = self._model.model_validate_json(found.value)
        self._remember(key, record, found.version)
        return record, found.version

    async def find(self, key: str) -> M | None:
        """A copy of the record (callers may set its fields freely), or None."""
        cached = self._cache.get(key) or await self._load(key)
        return None if cached is None else cached[0].model_copy()

    async def get(self, key: str) -> M:
        record = await self.find(key)
        if record is None:
            raise self._missing(key)
        return record

    async def insert(self, key: str, record: M) -> bool:
        """Store a new record; False if the key exists already."""
        version = await self._store.cas(self._ns, key, _dump(record), None)
        if version is None:
            return False
        self._remember(key, record.model_copy(), version)
        return True

    async def update(self, key: str, change: Callable[[M], bool]) -> M:
        """Apply ``change`` to a copy and write it if it returns True; return the record as stored.

        Copies are shallow: ``change`` must assign fields, not mutate the objects they hold
        (``record.items = [*record.items, x]``, not ``record.items.append(x)``). The returned
        record is the cached one: read it, don't change it.
        """
        cached = self._cache.get(key) or await self._load(key)
        for _ in range(_MAX_CAS_RETRIES):
            if cached is None:
                raise self._missing(key)
            record, version = cached[0].model_copy(), cached[1]
            if not change(record):
                return cached[0]
            new_version = await self._store.cas(self._ns, key, _dump(record), version)
            if new_version is not None:
                self._remember(key, record, new_version)
                return record
            cached = await self._load(key)  # someone else wrote it: start again from theirs
        raise StateStoreError(f"'{key}' kept changing under us: too much contention, try again")

    async def delete(self, key: str) -> None:
        self._cache.pop(key, None)
        await self._store.delete(self._ns, key)

    async def all(self) -> list[M]:
        records: list[M] = []
        after: str | None = None
        while True:
            page = await self._store.list(self._ns, after=after, limit=500)
            records.extend(self._model.model_validate_json(v.value) for _, v in page)
            if len(page) < 500:
                return records
            after = page[-1][0]


class ControlPlaneRecords:
    """Typed access to one deployment's records in a StateStore."""

    def __init__(self, store: StateStore, deployment: str) -> None:
        self.store = store
        self.deployment = deployment
        self.tasks: _Collection[StoredTask] = _Collection(
            store, f"{deployment}/tasks", StoredTask, lambda key: TaskNotFound(key, deployment)
        )
        self.sessions: _Collection[SessionRecord] = _Collection(
            store, f"{deployment}/sessions", SessionRecord, lambda key: SessionNotFound(key, deployment)
        )
        self._contexts_ns = f"{deployment}/contexts"
        self._contexts: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self.changes_stream = f"{deployment}/changes"

    def events_stream(self, task_id: str) -> str:
        return f"{self.deployment}/events/{task_id}"

    # --- tasks -------------------------------------------------------------------------------

    async def insert_task(self, task: StoredTask) -> None:
        if not await self.tasks.insert(task.task_id, task):
            raise TaskExists(task.task_id)

    async def get_task(self, task_id: str) -> StoredTask:
        return await self.tasks.get(task_id)

    async def find_task(self, task_id: str) -> StoredTask | None:
        return await self.tasks.find(task_id)

    async def update_task(self, task_id: str, change: Callable[[StoredTask], bool]) -> StoredTask:
        """Apply ``change`` under compare-and-set; it returns False to leave the record as it is."""
        return await self.tasks.update(task_id, change)

    async def list_tasks(self) -> list[StoredTask]:
        return await self.tasks.all()

    # --- sessions ----------------------------------------------------------------------------

    async def create_session(
        self, session_id: str, task_ids: list[str] | None = None
    ) -> tuple[SessionRecord, bool]:
        """Create the session if it does not exist; return it and whether it was created.

        A session made for one task is created with that task in it: one write instead of two.
        """
        record = SessionRecord(session_id=session_id, task_ids=list(task_ids or []))
        if await self.sessions.insert(session_id, record):
            self._remember_context(session_id, None)  # a new session has no Context yet
            return record, True
        return await self.get_session(session_id), False

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.sessions.get(session_id)

    async def add_task_to_session(self, session_id: str, task_id: str) -> SessionRecord:
        def add(record: SessionRecord) -> bool:
            record.task_ids = [*record.task_ids, task_id]
            return True

        return await self.sessions.update(session_id, add)

    async def remove_task_from_session(self, session_id: str, task_id: str) -> None:
        """Undo the last :meth:`add_task_to_session` of ``task_id`` (only that one entry)."""

        def remove(record: SessionRecord) -> bool:
            if task_id not in record.task_ids:
                return False
            last = len(record.task_ids) - 1 - record.task_ids[::-1].index(task_id)
            record.task_ids = record.task_ids[:last] + record.task_ids[last + 1 :]
            return True

        await self.sessions.update(session_id, remove)

    async def list_sessions(self) -> list[SessionRecord]:
        return await self.sessions.all()

    async def delete_session(self, session_id: str) -> SessionRecord:
        record = await self.get_session(session_id)
        await self.sessions.delete(session_id)
        self._contexts.pop(session_id, None)
        await self.store.delete(self._contexts_ns, session_id)
        return record

    # --- contexts ----------------------------------------------------------------------------

    def _remember_context(self, session_id: str, context: dict[str, Any] | None) -> None:
        self._contexts[session_id] = context
        self._contexts.move_to_end(session_id)
        if len(self._contexts) > _CACHE_SIZE:
            self._contexts.popitem(last=False)

    async def get_context(self, session_id: str) -> dict[str, Any] | None:
        if session_id in self._contexts:
            return self._contexts[session_id]
        found = await self.store.get(self._contexts_ns, session_id)
        context: dict[str, Any] | None = None if found is None else json.loads(found.value)
        self._remember_context(session_id, context)
        return context

    async def save_context(self, session_id: str, context: dict[str, Any]) -> None:
        await self.store.put(self._contexts_ns, session_id, json.dumps(context).encode())
        self._remember_context(session_id, context)


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
