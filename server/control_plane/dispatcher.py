"""Hands tasks to their service through the message queue, one task per session at a time.

The tasks of a session share the session's workflow Context, so a task is published only when
the session's previous task has finished and its Context has been saved; the task message then
carries that Context to the worker. Publishing uses the idempotent id ``<task_id>:start``, so
publishing a task twice (after a control-plane restart, a retry) starts it once.

Whose turn it is lives in the session's record, not in this process: ``active`` (the task handed
out) and ``waiting`` (the tasks behind it, oldest first), changed only by compare-and-set in the
same commit as the tasks they name. So several control planes sharing one store hand out a
session's tasks one at a time, in the order they were stored, each once; whoever applies a task's
end moves its session on. An ``active`` task found finished (a control plane died between the two
commits) frees the session for whoever looks next; :meth:`Dispatcher.recover` looks at start.

Nothing here can wedge a session: a publish that fails (the queue is down, its journal full) is
retried by a background loop until it goes through; a finished report applied twice advances the
session once; a task whose message cannot even be built fails alone. Cancelling takes the session's
lock (in this process) and re-reads the session (for the others), so a task is never handed out
between the look and the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llamactl.server.control_plane.publisher import TaskPublisher
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.session_turns import FreshTurns, SessionLocks, next_turn
from llamactl.server.control_plane.solo_runs import SoloRuns
from llamactl.server.control_plane.stored import SessionRecord, StoredTask
from llamactl.server.errors import (
    LlamactlError,
    MessageQueueError,
    SessionNotFound,
    StateStoreError,
    TaskExists,
    TaskFinished,
)
from llamactl.server.mq.base import MessageQueue
from llamactl.server.state.base import Write
from llamactl.server.types import TaskStatus

__all__ = ["CancelOutcome", "Dispatcher"]

log = logging.getLogger(__name__)

_RETRY_MAX = 5.0
_CAS_TRIES = 100
_NEVER_RAN = "cancelled before it started"
_SESSION_GONE = "cancelled: its session was deleted"
OnFinal = Callable[[StoredTask], None]


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """``task``: the record after the cancel; ``done``: it is cancelled already (it never ran or
    will not run); else its worker was asked to stop it."""

    task: StoredTask
    done: bool


class Dispatcher:
    def __init__(
        self,
        records: ControlPlaneRecords,
        queue: MessageQueue,
        timeouts: Mapping[str, float | None],
        *,
        on_final: OnFinal,
    ) -> None:
        self._records = records
        self._queue = queue
        self._publisher = TaskPublisher(records, queue, timeouts, unsendable=self._fail)
        self._solo = SoloRuns(records, self._publisher)
        self._on_final = on_final
        self._locks = SessionLocks()
        self._unpublished = self._publisher.unpublished
        self._unsettled: dict[str, list[str]] = {}
        """Sessions :meth:`recover` could not resume yet (the store failed), with the tasks it
        found unfinished in each: retried as it would have done it."""
        self._fresh = FreshTurns()
        self._retry = self._publisher.retry

    def set_timeouts(self, timeouts: Mapping[str, float | None]) -> None:
        self._publisher.timeouts = dict(timeouts)

    @property
    def sessions_in_memory(self) -> int:
        """Sessions this dispatcher keeps anything for (for tests: proves nothing leaks)."""
        held = (
            self._locks.keys() | set(self._unpublished.values()) | self._unsettled.keys() | self._fresh.keys()
        )
        return len(held)

    def _session(self, session_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.hold(session_id)

    # --- recovery and new tasks ----------------------------------------------------------------

    async def recover(self) -> int:
        """After a start: make every unfinished task's session hold it (records of an older
        llamactl did not), send its handed-out task again and hand out the next; return how many
        tasks were sent."""
        by_session: dict[str, list[str]] = {}
        for task in await self._records.unfinished_tasks():
            by_session.setdefault(task.session_id, []).append(task.task_id)
        sent = 0
        for session_id, task_ids in by_session.items():
            try:
                async with self._session(session_id):
                    sent += await self._pass_turn(session_id, adopt=task_ids, resend=True)
            except LlamactlError as exc:
                log.error("%s: session %s not resumed yet: %s", self._records.deployment, session_id, exc)
                self._unsettled[session_id] = task_ids
                self._retry.set()
        return sent

    async def submit(self, task: StoredTask, *, new_session: bool, new_id: bool = False) -> None:
        """Store a new task and hand it out now if its session is free, else queue it behind.

        ``new_session``: make a session for it (implicit: pruned with it); otherwise its session
        must exist (SessionNotFound) and is kept from then on. A task handed out at once is stored
        already marked as dispatched (one write less); should its publish fail, the retry loop
        publishes it (and :meth:`recover` after a restart). Raises TaskExists for a known id.
        ``new_id``: the task's id was made here, so no record can hold it yet. A task in a
        session of its own goes to :class:`SoloRuns`.
        """
        if task.own_session:
            await self._solo.submit(task, early=new_id and self._queue.restorable_in_memory)
            return
        session_id = task.session_id
        async with self._session(session_id):
            for _ in range(_CAS_TRIES):
                if new_session:
                    record, version = SessionRecord(session_id=session_id, created_at=task.created_at), None
                    record.implicit = True
                else:
                    found = await self._records.find_session_versioned(session_id)
                    if found is None:
                        raise SessionNotFound(session_id, self._records.deployment)
                    record, version = found
                    if (record.active is not None and await self._ended(record.active)) or (
                        record.active is None and record.waiting
                    ):
                        await self._pass_turn(session_id)  # a control plane died mid-way: move on first
                        continue
                # A new record is ours alone; a stored one is copied before it is changed.
                turn = record if new_session else record.model_copy(deep=True)
                turn.implicit = new_session
                task.dispatched = turn.active is None
                if task.dispatched:
                    turn.active = task.task_id
                else:
                    turn.waiting.append(task.task_id)
                writes: list[Write] = [self._records.session_write(turn, version)]
                if new_session:
                    writes.append(self._records.changes.entry("session.created", {"session_id": session_id}))
                at = len(writes)
                stored = self._records.task_write(task, None)
                writes += [stored, self._records.status_change(task)]
                result = await self._records.store.commit(writes)
                if result.ok:
                    self._records.remember_task(task, result.results[at], stored)
                    if new_session:
                        self._records.contexts.remember(session_id, None, 0)
                        if task.dispatched:
                            self._fresh.remember(session_id, task.task_id, turn, result.results[0])
                    else:
                        self._fresh.forget(session_id)
                    if task.dispatched:
                        await self._publisher.publish(task)
                    return
                if result.failed == at or new_session:  # a new session's id cannot collide: the task's did
                    raise TaskExists(task.task_id)
            raise StateStoreError(f"session '{session_id}' kept changing under us: too much contention")

    async def finished(self, task: StoredTask, *, released: bool = False) -> None:
        """A task reached a final status: free its session and hand out the next task.
        ``released``: the commit that stored the final status freed the session already (see
        :meth:`release_write`), so there is nothing left to do.

        Idempotent: a report applied twice advances the session once.
        """
        if task.own_session:
            self._unpublished.pop(task.task_id, None)
            return
        async with self._session(task.session_id):
            self._unpublished.pop(task.task_id, None)
            self._fresh.forget(task.session_id)
            if released:
                self._unsettled.pop(task.session_id, None)
                return
            await self._pass_turn(task.session_id, ended=task.task_id)

    async def resume(self, task: StoredTask) -> None:
        """Hand out again a task suspended at its question (its session's turn stays its own):
        the publisher sends its resume message."""
        async with self._session(task.session_id):
            await self._publisher.publish(task)

    async def release_write(self, session_id: str, task_id: str) -> Write | None:
        """The write that frees ``session_id`` 's turn from ``task_id``, for the commit that stores
        the task's final status (one commit per finished task instead of two), when nothing else
        has to happen: the session's active task is this one and no task waits. None otherwise;
        then :meth:`finished` passes the turn on. The write is conditional on the session record
        not changing meanwhile (a task stored behind it makes it fail: see ExtraConflict)."""
        fresh = self._fresh.take(session_id, task_id)
        if fresh is not None:
            record, version = fresh
        else:
            found = await self._records.find_session_versioned(session_id)
            if found is None:
                return None
            record, version = found
        if record.active != task_id or record.waiting:
            return None
        # Only ``active`` changes (nothing waits): a shallow copy shares no list that is written.
        return self._records.session_write(record.model_copy(update={"active": None}), version)

    async def _ended(self, task_id: str) -> bool:
        found = await self._records.find_task_versioned(task_id)
        return found is None or found[0].status.is_final

    async def _pass_turn(
        self,
        session_id: str,
        *,
        ended: str | None = None,
        adopt: list[str] | None = None,
        resend: bool = False,
    ) -> int:
        """Bring the session's turn up to date (the caller holds its lock): drop ``ended`` and
        tasks found finished, add the ``adopt`` ed tasks it lacks, hand out the next waiting task
        if none is out; with ``resend``, publish its handed-out task again. Returns how many
        tasks were published."""
        for _ in range(_CAS_TRIES):
            found = await self._records.find_session_versioned(session_id)
            if found is None:
                if ended is not None:
                    # Deleted while its task ran: the Context that task's end saved (after the
                    # delete, or this would not see it gone) belongs to no session any more.
                    await self._records.drop_orphan_context(session_id)
                sent = await self._orphans(adopt or [], resend)
                self._unsettled.pop(session_id, None)
                return sent
            record, version = found
            turn, active, claimed = await next_turn(self._records, record, ended=ended, adopt=adopt or ())
            if turn != record:
                writes: list[Write] = [self._records.session_write(turn, version)]
                if claimed is not None:
                    claimed[0].dispatched = True
                    claimed_write = self._records.task_write(claimed[0], claimed[1])
                    writes.append(claimed_write)
                self._fresh.forget(session_id)
                result = await self._records.store.commit(writes)
                if not result.ok:
                    continue  # another control plane moved it: look again
                if claimed is not None:
                    self._records.remember_task(claimed[0], result.results[1], claimed_write)
            sent = 0
            if claimed is not None:
                await self._publisher.publish(claimed[0])
                sent = 1
            elif resend and active is not None:
                # Publishing again is harmless (same msg id) and covers a crash between
                # recording that it was handed out and publishing it.
                await self._publisher.publish(active[0])
                sent = 1
            self._unsettled.pop(session_id, None)
            return sent
        raise StateStoreError(f"session '{session_id}' kept changing under us: too much contention")

    async def _orphans(self, task_ids: list[str], resend: bool) -> int:
        """Unfinished tasks with no session record (a session of their own, or one deleted or
        unreadable): the ones not handed out can never have their turn and end here; one handed
        out is sent again (it may be running) when ``resend``. Returns how many were sent."""
        sent = 0
        for task_id in task_ids:
            task = await self._records.find_task(task_id)
            if task is None or task.status.is_final:
                continue
            if not task.dispatched:
                await self._end(task, TaskStatus.CANCELLED, _SESSION_GONE, if_waiting=True)
            elif resend:
                await self._publisher.publish(task)
                sent += 1
        return sent

    # --- ending tasks that no worker holds -----------------------------------------------------

    async def _fail(self, task: StoredTask, error: str) -> None:
        """Fail a task that cannot run at all, and move its session on (the caller holds its lock)."""
        log.error("task %s failed: %s", task.task_id, error)
        await self._end(task, TaskStatus.FAILED, error)

    async def _end(
        self,
        task: StoredTask,
        status: TaskStatus,
        reason: str,
        *,
        if_waiting: bool = False,
        pass_turn: bool = True,
    ) -> StoredTask:
        """Give a task that no worker holds its final ``status``; with ``pass_turn``, the session
        moves on (the caller holds the session's lock). ``if_waiting``: only if it was not handed
        out (by another control plane, since the caller looked); check ``status`` of what comes
        back."""

        def end(t: StoredTask) -> bool:
            if t.status.is_final or (if_waiting and t.dispatched):
                return False
            t.status = status
            t.error = reason
            t.finished_at = time.time()
            return True

        stored, changed = await self._records.transition(task.task_id, end)
        self._unpublished.pop(task.task_id, None)
        if changed:
            self._on_final(stored)
        if pass_turn and not task.own_session:
            await self._pass_turn(task.session_id, ended=task.task_id)
        return stored

    async def retry_loop(self) -> None:
        """Publish what could not be published and pass on the turns that could not be passed,
        with backoff, until they go through."""
        delay = 0.0
        while True:
            await self._retry.wait()
            self._retry.clear()
            if delay:
                await asyncio.sleep(delay)
            for task_id, session_id in list(self._unpublished.items()):
                try:
                    async with self._session(session_id):
                        if task_id not in self._unpublished:
                            continue
                        task = await self._records.get_task(task_id)
                        if task.status.is_final:
                            self._unpublished.pop(task_id, None)
                            continue
                        await self._publisher.publish(task)
                except (StateStoreError, MessageQueueError) as exc:
                    log.warning("task %s still not handed out: %s", task_id, exc)
            for session_id, task_ids in list(self._unsettled.items()):
                try:
                    async with self._session(session_id):
                        if session_id in self._unsettled:
                            await self._pass_turn(session_id, adopt=task_ids, resend=True)
                except (StateStoreError, MessageQueueError) as exc:
                    log.warning("session %s still not moved on: %s", session_id, exc)
            if self._unpublished or self._unsettled:
                self._retry.set()
                delay = min(_RETRY_MAX, max(0.1, delay * 2))
            else:
                delay = 0.0

    async def check_turns(self, older_than: float, limit: int = 500) -> int:
        """For stores other servers share: finish what a server that died left half done.

        Looks at the oldest queued tasks created more than ``older_than`` seconds ago: one not
        handed out has its session's turn passed on (its ``active`` task may have ended on a
        server that died before moving the session on); one handed out is published again (a
        server may have died before its publish went through; the queue absorbs the copy of a
        message it holds). Returns how many tasks were published.
        """
        cutoff = time.time() - older_than
        page = await self._records.list_tasks(status=TaskStatus.QUEUED, limit=limit)
        stale = [t for t in page.items if t.created_at < cutoff]
        sent = 0
        for task in stale:
            if task.own_session:  # stored as handed out, with no session to hold its turn
                await self._publisher.publish(task)
                sent += 1
        for session_id in dict.fromkeys(t.session_id for t in stale if not t.own_session):
            async with self._session(session_id):
                sent += await self._pass_turn(session_id, resend=True)
        return sent

    # --- cancel, deleted sessions and removed services -----------------------------------------

    async def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a task: at once if it has not reached a worker (it never runs), else ask its worker.

        Raises TaskFinished if it ended already, TaskNotFound if there is no such task.
        """
        task = await self._records.get_task(task_id)
        async with self._session(task.session_id):
            found = await self._records.find_task_versioned(task_id)
            task = found[0] if found is not None else await self._records.get_task(task_id)
            if task.status.is_final:
                raise TaskFinished(task_id, task.status.value)
            session = None if task.own_session else await self._records.find_session(task.session_id)
            if session is not None and task_id in session.waiting:
                ended = await self._end(task, TaskStatus.CANCELLED, _NEVER_RAN, if_waiting=True)
                if ended.status is TaskStatus.CANCELLED:
                    return CancelOutcome(ended, True)
            if task_id in self._unpublished or await self._publisher.take_back(task):
                return CancelOutcome(await self._end(task, TaskStatus.CANCELLED, _NEVER_RAN), True)
            task, _ = await self._records.transition(task_id, _request_cancel, feed=False)
        await self._publisher.ask_to_stop(task_id)
        return CancelOutcome(task, False)

    async def drop_session(self, session_id: str) -> int:
        """Delete a session and its Context, cancelling the tasks that wait in it (with no
        session they could never run); the one handed out finishes. Returns how many were
        cancelled. Raises SessionNotFound.

        All under the session's lock, and the delete conditional on the record as read: a task
        stored in the session in between would wait for ever behind a record that is gone.
        """
        cancelled = 0
        async with self._session(session_id):
            for _ in range(_CAS_TRIES):
                session, version = await self._records.get_session_versioned(session_id)
                for task_id in session.waiting:
                    task = await self._records.find_task(task_id)
                    if task is None or task.status.is_final:
                        continue
                    # No turn passed on: the task behind this one is cancelled next, not handed
                    # out (the one out may have ended, its session not moved on yet).
                    ended = await self._end(
                        task, TaskStatus.CANCELLED, _SESSION_GONE, if_waiting=True, pass_turn=False
                    )
                    cancelled += ended.status is TaskStatus.CANCELLED
                if await self._records.delete_session(session_id, version):
                    self._fresh.forget(session_id)
                    return cancelled
        raise StateStoreError(f"session '{session_id}' kept changing under us: too much contention")

    async def fail_service(self, service_id: str, reason: str) -> int:
        """Fail the tasks of ``service_id`` that wait (none of them was handed out)."""
        failed = 0
        cursor: str | None = None
        while True:
            page = await self._records.list_tasks(
                service_id=service_id, status=TaskStatus.QUEUED, limit=500, cursor=cursor
            )
            for task in page.items:
                if task.dispatched and task.task_id not in self._unpublished:
                    continue
                async with self._session(task.session_id):
                    current = await self._records.find_task(task.task_id)
                    if current is not None and not current.status.is_final:
                        await self._fail(current, reason)
                        failed += 1
            if page.next_cursor is None:
                return failed
            cursor = page.next_cursor


def _request_cancel(task: StoredTask) -> bool:
    if task.cancel_requested or task.status.is_final:
        return False
    task.cancel_requested = True
    return True
