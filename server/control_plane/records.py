"""How the control plane keeps tasks, sessions, Contexts and event logs in a StateStore.

Layout (all values JSON):

* ns ``<deployment>/tasks``, key task id: a :class:`~llamactl.server.types.TaskRecord` plus dispatch
  bookkeeping, indexed by ``session`` (unless it is the task's own) and ``svc_status``
  (``<service>/<status>``) and sorted by creation, so listings and counts never read every task:
  a status or a service alone is read as the ``svc_status`` values the counts list, merged.
  (Records written before 2026-12 also carry ``status`` and ``service`` entries, read by
  nobody; they go with their records.)
* ns ``<deployment>/sessions``, key session id: ``{"session_id", "created_at", "implicit"}``
  (``implicit``: made by ``tasks/create`` for one task); a session's tasks are found through the
  tasks' index. A ``tasks/run`` that names no session runs in a session of its own that has no
  record (:attr:`StoredTask.own_session`) and no index entry: only its task knows it, and listing
  the tasks of that id finds none, as asking for the session finds none.
* ns ``<deployment>/contexts``, key session id: the workflow ``Context.to_dict()`` of the session.
* ns ``<deployment>/where``, key task id: the task's latest answer to "where is it?".
* ns ``<deployment>/resume``, key task id: the :class:`~llamactl.server.protocol.TaskResume` of a
  task whose run was suspended at its question (:attr:`StoredTask.resume_from`).
* log ``<deployment>/events/<task id>``: the task's :class:`~llamactl.server.types.EventEnvelope` s
  (offset = seq).
* log ``<deployment>/changes``: the change feed.

Every change of a task is one :meth:`ControlPlaneRecords.transition`: the new record (compare-and-set
against the version last seen), its change-feed entry and whatever must go with it (events, the
Context) are written in one commit, or not at all. Records this control plane has read or written
stay in a bounded cache with their version: an update costs one write (no read first) unless
another writer got there in between, in which case the record is read again and the change
re-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pydantic import ValidationError

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.contexts import SessionContexts
from llamactl.server.control_plane.record_cache import RecordCache
from llamactl.server.control_plane.session_records import SessionRecords, dump
from llamactl.server.control_plane.stored import Page, StoredTask, changed_index, task_filter
from llamactl.server.control_plane.unstored_runs import UnstoredRuns
from llamactl.server.errors import StateStoreError, TaskNotFound
from llamactl.server.protocol import TaskResume
from llamactl.server.state.base import Append, Cas, Delete, DeleteLog, Put, StateStore, Versioned, Write
from llamactl.server.types import TaskStatus

__all__ = ["ControlPlaneRecords", "ExtraConflict"]

log = logging.getLogger(__name__)

_MAX_CAS_RETRIES = 100
TASK_CACHE = 4096
TASK_CACHE_BYTES = 64 << 20
"""At most this many task ids in a SessionDefinition (the newest ones)."""

Extra = Callable[["StoredTask"], Sequence[Write]]


class ExtraConflict(Exception):
    """A conditional write given to :meth:`ControlPlaneRecords.transition` as ``extra`` did not
    hold (another writer changed that record): nothing was stored."""


class ControlPlaneRecords(SessionRecords):
    """Typed access to one deployment's records in a StateStore."""

    def __init__(self, store: StateStore, deployment: str, changes: ChangeFeed) -> None:
        self.store = store
        self.deployment = deployment
        self.changes = changes
        self.tasks_ns = f"{deployment}/tasks"
        self.sessions_ns = f"{deployment}/sessions"
        self.session_state_ns = f"{deployment}/session_state"
        """The free-form state dict the control-plane port keeps per session (Llama Deploy 0.8's
        ``/sessions/{id}/state``): deleted with its session."""
        self.contexts = SessionContexts(store, deployment)
        """Each session's workflow Context."""
        self.where_ns = f"{deployment}/where"
        """Each running task's latest answer to "where is it?" (one per task, gone with the task)."""
        self.resume_ns = f"{deployment}/resume"
        """The resume point (a ``protocol.TaskResume``) of each task whose run was suspended at a
        question: one per task, gone when it ends."""
        self.fresh_reads = store.shared
        """Other processes write the store too: read records from it, never from the cache (the
        cache still gives the version a compare-and-set starts from)."""
        self._tasks: RecordCache[tuple[StoredTask, int]] = RecordCache(TASK_CACHE, TASK_CACHE_BYTES)
        self._storing: dict[str, asyncio.Event] = {}
        """Tasks handed out before their first commit (:meth:`storing`): reading one waits for it."""
        self.unreadable = 0
        """Stored records that could not be read (skipped, logged): health, tests."""
        self.unstored = UnstoredRuns()
        """Runs handed out whose record waits for their first report (``unstored_runs.py``)."""

    def events_stream(self, task_id: str) -> str:
        return f"{self.deployment}/events/{task_id}"

    # --- tasks: reading ----------------------------------------------------------------------

    def _remember(self, task: StoredTask, version: int, size: int) -> None:
        self._tasks.put(task.task_id, (task, version), size)

    def _parse(self, key: str, raw: bytes) -> StoredTask | None:
        return self._parsed(StoredTask, "task", key, raw)

    @contextlib.contextmanager
    def storing(self, task_id: str) -> Iterator[None]:
        """The task's first commit is under way while the block runs (it was handed out first):
        whoever reads the task meanwhile (its worker's report came back first) waits for the
        block to end, then reads it as stored, or finds no task if the commit failed."""
        done = self._storing[task_id] = asyncio.Event()
        try:
            yield
        finally:
            del self._storing[task_id]
            done.set()

    @property
    def cached(self) -> tuple[int, int]:
        """Task records and Contexts held in memory now (for tests: proves both caches bounded)."""
        return len(self._tasks), len(self.contexts)

    @property
    def tasks_being_stored(self) -> int:
        """Tasks inside :meth:`storing` now: runs handed out whose record is not stored yet."""
        return len(self._storing)

    async def _load(self, task_id: str) -> tuple[StoredTask, int] | None:
        self.unstored.release(task_id)  # a run held for its first report: stored now, read below
        storing = self._storing.get(task_id)
        if storing is not None:
            await storing.wait()
            stored = None if self.fresh_reads else self._tasks.get(task_id)
            if stored is not None:
                return stored  # remembered by the commit just waited for
        found = await self.store.get(self.tasks_ns, task_id)
        task = None if found is None else self._parse(task_id, found.value)
        if task is None or found is None:
            self._tasks.pop(task_id)
            return None
        self._remember(task, found.version, len(found.value))
        return task, found.version

    async def current_task(self, task_id: str) -> StoredTask | None:
        """The task as this server knows it, for a reader that changes it next by
        :meth:`transition`: a run not stored yet as it was handed out (left to wait for that
        change: see ``unstored_runs.py``), else as :meth:`find_task_versioned` (cached) has it."""
        held = self.unstored.peek(task_id)
        if held is not None:
            return held.clone()
        found = await self.find_task_versioned(task_id, fresh=False)
        return None if found is None else found[0]

    async def find_task(self, task_id: str) -> StoredTask | None:
        """A copy of the task's record (callers may change it freely), or None."""
        found = await self.find_task_versioned(task_id, fresh=self.fresh_reads)
        return None if found is None else found[0]

    async def find_task_versioned(self, task_id: str, *, fresh: bool = True) -> tuple[StoredTask, int] | None:
        """A copy of the task's record and its version (read from the store unless ``fresh`` is
        False and it is cached), or None."""
        cached = (None if fresh else self._tasks.get(task_id)) or await self._load(task_id)
        return None if cached is None else (cached[0].clone(), cached[1])

    async def peek_task(self, task_id: str) -> StoredTask:
        """The task's record itself, not a copy (read from the store when :attr:`fresh_reads`):
        for readers only, who must not change it. Raises TaskNotFound."""
        cached = (None if self.fresh_reads else self._tasks.get(task_id)) or await self._load(task_id)
        if cached is None:
            raise TaskNotFound(task_id, self.deployment)
        return cached[0]

    def final_cached(self, task_id: str) -> StoredTask | None:
        """The task's record itself when the cache holds it final (completed, failed or
        cancelled), else None: a final record changes no more, so it needs no fresh read, even
        from a store other processes write. For readers only, as :meth:`peek_task`."""
        cached = self._tasks.get(task_id)
        return cached[0] if cached is not None and cached[0].status.is_final else None

    def remember_task(self, task: StoredTask, version: int, write: Cas) -> None:
        """A task record written by ``write``, in a commit made outside :meth:`transition` (the
        cache counts the write's size)."""
        self._remember(task.clone(), version, len(write.value))

    async def get_task(self, task_id: str) -> StoredTask:
        task = await self.find_task(task_id)
        if task is None:
            raise TaskNotFound(task_id, self.deployment)
        return task

    async def list_tasks(
        self,
        *,
        session_id: str | None = None,
        status: TaskStatus | None = None,
        service_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        descending: bool = False,
    ) -> Page:
        """Tasks in creation order (``descending``: newest first), filtered, a page at a time."""
        query = task_filter(session_id, status, service_id)
        values: list[str | None] = [query.value]
        if query.pick is not None:
            counts = await self.store.count(self.tasks_ns, query.field)
            values = [v for v in sorted(counts) if query.pick(v)]
        items: list[StoredTask] = []
        after = cursor
        while values and len(items) < limit:
            want = limit - len(items)
            rows = await self._query_merged(query.field, values, after, want, descending)
            for key, found, sort in rows:
                after = sort
                task = self._parse(key, found.value)
                if task is not None and query.keep(task):
                    items.append(task)
            if len(rows) < want:
                return Page(items=items, next_cursor=None)
        return Page(items=items, next_cursor=after if values else None)

    async def _query_merged(
        self, field: str, values: list[str | None], after: str | None, limit: int, descending: bool
    ) -> list[tuple[str, Versioned, str]]:
        """The first ``limit`` tasks past ``after`` in sort order among those indexed under any
        of ``values``: each value's first ``limit``, merged."""
        rows: list[tuple[str, Versioned, str]] = []
        for value in values:
            rows += await self.store.query(
                self.tasks_ns, field, value, after=after, limit=limit, descending=descending
            )
        if len(values) > 1:
            rows.sort(key=lambda row: row[2], reverse=descending)
        return rows[:limit]

    async def unfinished_tasks(self) -> list[StoredTask]:
        """Every queued or running task, oldest first (for recovery after a start)."""
        tasks: list[StoredTask] = []
        for status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            cursor: str | None = None
            while True:
                page = await self.list_tasks(status=status, limit=500, cursor=cursor)
                tasks += page.items
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        return sorted(tasks, key=lambda t: t.sort)

    async def count_tasks(self) -> dict[str, dict[str, int]]:
        """Tasks by service and status: ``{service: {status: n}}`` (statuses with none left out)."""
        counts: dict[str, dict[str, int]] = {}
        for value, n in (await self.store.count(self.tasks_ns, "svc_status")).items():
            service, _, status = value.rpartition("/")
            counts.setdefault(service, {})[status] = n
        return counts

    # --- tasks: writing ----------------------------------------------------------------------

    def status_change(self, task: StoredTask) -> Append:
        """The change-feed entry of a task's new status (``own_session`` and ``waiting_for_answer``
        only when true: most entries are neither)."""
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "session_id": task.session_id,
            "service_id": task.service_id,
            "status": task.status.value,
            "attempts": task.attempts,
            "replica_id": task.replica_id,
            "error": task.error,
        }
        if task.own_session:
            data["own_session"] = True
        if task.waiting_for_answer:
            data["waiting_for_answer"] = True
        return self.changes.entry("task.status", data)

    def task_write(self, task: StoredTask, version: int | None) -> Cas:
        """Write a task record at ``version`` (None: create it, with its index)."""
        index = task.index() if version is None else None
        return Cas(self.tasks_ns, task.task_id, dump(task), version, index)

    async def transition(
        self,
        task_id: str,
        change: Callable[[StoredTask], bool],
        extra: Extra | None = None,
        *,
        feed: bool = True,
        extra_may_conflict: bool = False,
    ) -> tuple[StoredTask, bool]:
        """Apply ``change`` to a copy of the task and store it, in one commit with ``extra(task)``
        and (``feed``) the task's change-feed entry. ``change`` returns False to leave the task as
        it is (then nothing is written). Returns the task as stored and whether it changed.
        ``extra_may_conflict``: a conditional write of ``extra`` that fails raises ExtraConflict
        (nothing is stored) instead of being tried again.

        Copies are shallow: ``change`` must assign fields, not mutate the objects they hold.
        """
        held = self.unstored.take(task_id)
        if held is not None:
            stored = await self._create_with(
                held, change, extra, feed=feed, extra_may_conflict=extra_may_conflict
            )
            if stored is not None:
                return stored
        cached = self._tasks.get(task_id) or await self._load(task_id)
        for _ in range(_MAX_CAS_RETRIES):
            if cached is None:
                raise TaskNotFound(task_id, self.deployment)
            task, version = cached[0].clone(), cached[1]
            if not change(task):
                return cached[0].clone(), False
            writes: list[Write] = [*(extra(task) if extra else ())]
            at = len(writes)
            value = dump(task)
            writes.append(Cas(self.tasks_ns, task_id, value, version, changed_index(cached[0], task)))
            if feed:
                writes.append(self.status_change(task))
            result = await self.store.commit(writes)
            if result.ok:
                self._remember(task.clone(), result.results[at], len(value))
                return task, True
            if extra_may_conflict and result.failed is not None and result.failed < at:
                raise ExtraConflict(task_id)
            cached = await self._load(task_id)  # someone else wrote it: start again from theirs
        raise StateStoreError(f"task '{task_id}' kept changing under us: too much contention, try again")

    async def _create_with(
        self,
        held: StoredTask,
        change: Callable[[StoredTask], bool],
        extra: Extra | None,
        *,
        feed: bool,
        extra_may_conflict: bool,
    ) -> tuple[StoredTask, bool] | None:
        """:meth:`transition` of a run not stored yet (taken from :attr:`unstored`): its record
        created as ``change`` leaves it, in one commit with ``extra`` and its change-feed entry.
        None when that could not be (``change`` made none, or a write failed its condition): the
        run is then stored alone, and the caller goes on as with any stored task. A store error,
        or ExtraConflict as :meth:`transition` says, is raised, the run stored alone meanwhile."""
        task_id = held.task_id
        task = held.clone()
        if not change(task):
            self.unstored.give_back(task_id)
            return None
        writes: list[Write] = [*(extra(task) if extra else ())]
        at = len(writes)
        value = dump(task)
        writes.append(Cas(self.tasks_ns, task_id, value, None, task.index()))
        if feed:
            writes.append(self.status_change(task))
        try:
            result = await self.store.commit(writes)
        except BaseException:
            self.unstored.give_back(task_id)
            raise
        if not result.ok:
            self.unstored.give_back(task_id)
            if extra_may_conflict and result.failed is not None and result.failed < at:
                raise ExtraConflict(task_id)
            return None
        self._remember(task.clone(), result.results[at], len(value))
        self.unstored.stored(task_id)
        return task, True

    async def delete_tasks(
        self, tasks: Sequence[StoredTask], sessions: Iterable[tuple[str, int]] = ()
    ) -> bool:
        """Forget finished tasks (records, event logs, where answers) and the ``sessions`` (with
        their Context; each only at its version), all in one commit. False when a session had
        changed: then nothing was deleted."""
        # Grouped by kind: a store may delete each run of them in one statement.
        writes: list[Write] = [DeleteLog(self.events_stream(task.task_id)) for task in tasks]
        for ns in (self.where_ns, self.resume_ns, self.tasks_ns):
            writes += [Delete(ns, task.task_id) for task in tasks]
        sessions = list(sessions)
        writes += [Delete(self.sessions_ns, session_id, version) for session_id, version in sessions]
        writes += [self.contexts.delete(session_id) for session_id, _ in sessions]
        writes += [Delete(self.session_state_ns, session_id) for session_id, _ in sessions]
        if writes and not (await self.store.commit(writes)).ok:
            return False
        for task in tasks:
            self._tasks.pop(task.task_id)
        for session_id, _ in sessions:
            self.contexts.forget(session_id)
        return True

    # --- resume points and orphan Contexts ---------------------------------------------------

    async def get_resume(self, task_id: str) -> TaskResume | None:
        """The task's resume point, None if it has none (or it cannot be read: logged)."""
        found = await self.store.get(self.resume_ns, task_id)
        if found is None:
            return None
        try:
            return TaskResume.model_validate_json(found.value)
        except (ValidationError, ValueError) as exc:
            log.error("%s: the resume point of task %r cannot be read: %s", self.deployment, task_id, exc)
            return None

    def resume_write(self, task_id: str, resume: TaskResume) -> Put:
        return Put(self.resume_ns, task_id, resume.model_dump_json().encode())

    async def drop_orphan_context(self, session_id: str) -> None:
        """Delete the Context of a session that has no record (deleted while its task ran); one
        whose record is there but unreadable keeps its Context."""
        if await self.store.get(self.sessions_ns, session_id) is None:
            await self.store.delete(self.contexts.ns, session_id)
            self.contexts.forget(session_id)
