"""Hands tasks to their service through the message queue, one task per session at a time.

The tasks of a session share the session's workflow Context, so a task is published only when
the session's previous task has finished and its Context has been saved; the task message then
carries that Context to the worker. Publishing uses the idempotent id ``<task_id>:start``, so
publishing a task twice (after a control-plane restart, a retry) starts it once.

Nothing here can wedge a session: a publish that fails (the queue is down, its journal full) is
retried by a background loop until it goes through; a finished report applied twice advances the
session once; a task whose message cannot even be built fails alone. Cancelling takes the session's
lock, so a task is never handed out between the look and the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamactl.server.control_plane.records import ControlPlaneRecords, StoredTask
from llamactl.server.errors import LlamactlError, MessageQueueError, StateStoreError, TaskFinished
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import TaskInput, TaskInputKind, TaskMessage, start_msg_id
from llamactl.server.types import TaskStatus

__all__ = ["CancelOutcome", "Dispatcher"]

log = logging.getLogger(__name__)

_RETRY_MAX = 5.0
_NEVER_RAN = "cancelled before it started"
OnFinal = Callable[[StoredTask], None]


@dataclass(slots=True)
class _Lock:
    lock: asyncio.Lock
    users: int = 0


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
        self._timeouts = dict(timeouts)
        self._on_final = on_final
        self._locks: dict[str, _Lock] = {}
        self._active: dict[str, str] = {}
        """session id -> the id of its handed-out, unfinished task."""
        self._waiting: dict[str, deque[str]] = {}
        """session id -> ids of its tasks not handed out yet, oldest first."""
        self._unpublished: dict[str, str] = {}
        """session id -> its active task, whose publish has not gone through yet."""
        self._retry = asyncio.Event()

    def set_timeouts(self, timeouts: Mapping[str, float | None]) -> None:
        self._timeouts = dict(timeouts)

    @property
    def sessions_in_memory(self) -> int:
        """Sessions this dispatcher keeps anything for (for tests: proves nothing leaks)."""
        return len(self._locks.keys() | self._active.keys() | self._waiting.keys() | self._unpublished.keys())

    @contextlib.asynccontextmanager
    async def _session(self, session_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(session_id)
        if entry is None:
            entry = self._locks[session_id] = _Lock(asyncio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[session_id]

    # --- recovery and new tasks ----------------------------------------------------------------

    async def recover(self) -> int:
        """Rebuild the per-session queues from the store after a start; return tasks re-sent."""
        sessions: dict[str, None] = {}
        for task in await self._records.unfinished_tasks():
            sessions[task.session_id] = None
            if task.dispatched and task.session_id not in self._active:
                self._active[task.session_id] = task.task_id
            else:
                self._waiting.setdefault(task.session_id, deque()).append(task.task_id)
        resent = 0
        for session_id in sessions:
            try:
                async with self._session(session_id):
                    active = self._active.get(session_id)
                    if active is not None:
                        # Publishing again is harmless (same msg id) and covers a crash between
                        # recording that it was handed out and publishing it.
                        await self._publish_or_retry(await self._records.get_task(active))
                        resent += 1
                    else:
                        resent += await self._advance_locked(session_id)
            except LlamactlError as exc:
                log.error("%s: session %s not resumed yet: %s", self._records.deployment, session_id, exc)
                self._retry.set()
        return resent

    async def submit(self, task: StoredTask, store: Callable[[StoredTask], Awaitable[None]]) -> None:
        """Store a new task with ``store`` and hand it out now if its session is free, else queue it.

        A task handed out at once is stored already marked as dispatched (one write less); should
        its publish fail, the retry loop publishes it (and :meth:`recover` after a restart).
        """
        async with self._session(task.session_id):
            free = task.session_id not in self._active and not self._waiting.get(task.session_id)
            task.dispatched = free
            await store(task)
            if free:
                self._active[task.session_id] = task.task_id
                await self._publish_or_retry(task)
            else:
                self._waiting.setdefault(task.session_id, deque()).append(task.task_id)

    async def finished(self, task: StoredTask) -> None:
        """A task reached a final status: free its session and hand out the next task.

        Idempotent: a report applied twice advances the session once.
        """
        async with self._session(task.session_id):
            self._forget(task)
            if task.session_id not in self._active:
                await self._advance_locked(task.session_id)

    def _forget(self, task: StoredTask) -> None:
        session_id = task.session_id
        if self._active.get(session_id) == task.task_id:
            del self._active[session_id]
            if self._unpublished.get(session_id) == task.task_id:
                del self._unpublished[session_id]
        waiting = self._waiting.get(session_id)
        if waiting is not None and task.task_id in waiting:
            waiting.remove(task.task_id)
            if not waiting:
                del self._waiting[session_id]

    async def _advance_locked(self, session_id: str) -> int:
        waiting = self._waiting.get(session_id)
        while waiting:
            task_id = waiting.popleft()
            task = await self._records.find_task(task_id)
            if task is None or task.status.is_final:
                continue
            self._active[session_id] = task_id
            try:
                task, _ = await self._records.transition(task_id, _mark_dispatched, feed=False)
            except BaseException:
                del self._active[session_id]
                waiting.appendleft(task_id)
                raise
            await self._publish_or_retry(task)
            if not waiting:
                del self._waiting[session_id]
            return 1
        self._waiting.pop(session_id, None)
        return 0

    # --- publishing --------------------------------------------------------------------------

    def _message(self, task: StoredTask, context: dict[str, Any] | None) -> bytes:
        message = TaskMessage(
            task_id=task.task_id,
            session_id=task.session_id,
            service_id=task.service_id,
            deployment=self._records.deployment,
            input=json.loads(task.input) if task.input.strip() else {},
            context=context,
            timeout=self._timeouts.get(task.service_id),
        )
        return message.model_dump_json().encode()

    async def _publish_or_retry(self, task: StoredTask) -> None:
        """Publish the task's start message; if the queue fails, leave it to the retry loop."""
        try:
            payload = self._message(task, await self._records.get_context(task.session_id))
        except (ValueError, TypeError) as exc:
            await self._fail(task, f"the task cannot be handed to its service: {exc}")
            return
        try:
            await self._queue.publish(
                topics.service_topic(self._records.deployment, task.service_id),
                payload,
                msg_id=start_msg_id(task.task_id),
                key=task.session_id,
            )
        except MessageQueueError as exc:
            if task.session_id not in self._unpublished:
                log.warning("task %s not handed out yet (%s): retrying", task.task_id, exc)
            self._unpublished[task.session_id] = task.task_id
            self._retry.set()
            return
        if self._unpublished.get(task.session_id) == task.task_id:
            del self._unpublished[task.session_id]

    async def _fail(self, task: StoredTask, error: str) -> None:
        """Fail a task that cannot run at all, and move its session on (the caller holds its lock)."""
        log.error("task %s failed: %s", task.task_id, error)
        await self._end(task, TaskStatus.FAILED, error)

    async def _end(self, task: StoredTask, status: TaskStatus, reason: str) -> StoredTask:
        """Give a task that no worker holds its final ``status``; the session moves on (the
        caller holds the session's lock)."""

        def end(t: StoredTask) -> bool:
            if t.status.is_final:
                return False
            t.status = status
            t.error = reason
            t.finished_at = time.time()
            return True

        stored, changed = await self._records.transition(task.task_id, end)
        self._forget(stored)
        if changed:
            self._on_final(stored)
        if task.session_id not in self._active:
            await self._advance_locked(task.session_id)
        return stored

    async def retry_loop(self) -> None:
        """Publish what could not be published, with backoff, until it goes through."""
        delay = 0.0
        while True:
            await self._retry.wait()
            self._retry.clear()
            if delay:
                await asyncio.sleep(delay)
            failed = False
            for session_id, task_id in list(self._unpublished.items()):
                try:
                    async with self._session(session_id):
                        if self._unpublished.get(session_id) != task_id:
                            continue
                        task = await self._records.get_task(task_id)
                        if task.status.is_final:
                            self._forget(task)
                            continue
                        await self._publish_or_retry(task)
                except (StateStoreError, MessageQueueError) as exc:
                    log.warning("task %s still not handed out: %s", task_id, exc)
                failed = failed or session_id in self._unpublished
            if failed:
                self._retry.set()
                delay = min(_RETRY_MAX, max(0.1, delay * 2))
            else:
                delay = 0.0

    # --- cancel and removed services -------------------------------------------------------------

    async def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a task: at once if it has not reached a worker (it never runs), else ask its worker.

        Raises TaskFinished if it ended already, TaskNotFound if there is no such task.
        """
        task = await self._records.get_task(task_id)
        async with self._session(task.session_id):
            task = await self._records.get_task(task_id)
            if task.status.is_final:
                raise TaskFinished(task_id, task.status.value)
            session_id = task.session_id
            if self._active.get(session_id) != task_id:
                if task.task_id in self._waiting.get(session_id, ()):
                    return CancelOutcome(await self._end(task, TaskStatus.CANCELLED, _NEVER_RAN), True)
            elif self._unpublished.get(session_id) == task_id or await self._queue.discard(
                topics.service_topic(self._records.deployment, task.service_id), start_msg_id(task_id)
            ):
                return CancelOutcome(await self._end(task, TaskStatus.CANCELLED, _NEVER_RAN), True)
            task, _ = await self._records.transition(task_id, _request_cancel, feed=False)
        # It runs (or is about to): its worker reads the cancel from the task's input stream.
        await self._queue.publish(
            topics.task_input_topic(self._records.deployment, task_id),
            TaskInput(kind=TaskInputKind.CANCEL).model_dump_json().encode(),
            msg_id=f"{task_id}:cancel",
        )
        return CancelOutcome(task, False)

    async def fail_service(self, service_id: str, reason: str) -> int:
        """Fail the tasks of ``service_id`` that wait here (none of them was handed out)."""
        failed = 0
        for session_id in list(self._waiting.keys() | self._unpublished.keys()):
            async with self._session(session_id):
                ids = [*self._waiting.get(session_id, ())]
                if (unpublished := self._unpublished.get(session_id)) is not None:
                    ids.insert(0, unpublished)
                for task_id in ids:
                    task = await self._records.find_task(task_id)
                    if task is not None and task.service_id == service_id and not task.status.is_final:
                        await self._fail(task, reason)
                        failed += 1
        return failed


def _mark_dispatched(task: StoredTask) -> bool:
    if task.dispatched or task.status.is_final:
        return False
    task.dispatched = True
    return True


def _request_cancel(task: StoredTask) -> bool:
    if task.cancel_requested or task.status.is_final:
        return False
    task.cancel_requested = True
    return True
