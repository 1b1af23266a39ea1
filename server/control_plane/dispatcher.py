"""Hands tasks to their service through the message queue, one task per session at a time.

The tasks of a session share the session's workflow Context, so a task is published only when
the session's previous task has finished and its Context has been saved; the task message then
carries that Context to the worker. Publishing uses the idempotent id ``<task_id>:start``, so
publishing a task twice (after a control-plane restart, say) starts it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from llamactl.server.control_plane.records import ControlPlaneRecords, StoredTask
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import TaskMessage, start_msg_id

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        records: ControlPlaneRecords,
        queue: MessageQueue,
        timeouts: Mapping[str, float | None],
    ) -> None:
        self._records = records
        self._queue = queue
        self._timeouts = dict(timeouts)
        self._locks: dict[str, asyncio.Lock] = {}
        self._active: dict[str, str] = {}
        """session id -> the id of its handed-out, unfinished task."""
        self._waiting: dict[str, deque[str]] = {}
        """session id -> ids of its tasks not handed out yet, oldest first."""

    def set_timeouts(self, timeouts: Mapping[str, float | None]) -> None:
        self._timeouts = dict(timeouts)

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    async def recover(self) -> int:
        """Rebuild the per-session queues from the store after a start; return tasks re-sent."""
        unfinished = [t for t in await self._records.list_tasks() if not t.status.is_final]
        unfinished.sort(key=lambda t: t.created_at)
        sessions: set[str] = set()
        for task in unfinished:
            sessions.add(task.session_id)
            if task.dispatched:
                self._active.setdefault(task.session_id, task.task_id)
            else:
                self._waiting.setdefault(task.session_id, deque()).append(task.task_id)
        resent = 0
        for session_id in sessions:
            active = self._active.get(session_id)
            if active is not None:
                # Publishing again is harmless (same msg id) and covers a crash between
                # publishing and recording that it was published.
                await self._publish(await self._records.get_task(active))
                resent += 1
            else:
                resent += await self._advance(session_id)
        return resent

    async def submit(self, task: StoredTask, store: Callable[[StoredTask], Awaitable[None]]) -> None:
        """Store a new task with ``store`` and hand it out now if its session is free, else queue it.

        A task handed out at once is stored already marked as dispatched (one write less); should
        the publish after it be lost, :meth:`recover` publishes it again under the same id.
        """
        async with self._lock(task.session_id):
            free = task.session_id not in self._active and not self._waiting.get(task.session_id)
            task.dispatched = free
            await store(task)
            if free:
                self._active[task.session_id] = task.task_id
                await self._publish(task)
            else:
                self._waiting.setdefault(task.session_id, deque()).append(task.task_id)

    async def finished(self, task: StoredTask) -> None:
        """A task reached a final status: free its session and hand out the next task."""
        async with self._lock(task.session_id):
            if self._active.get(task.session_id) == task.task_id:
                del self._active[task.session_id]
            waiting = self._waiting.get(task.session_id)
            if waiting is not None and task.task_id in waiting:
                waiting.remove(task.task_id)
            await self._advance_locked(task.session_id)

    def is_waiting(self, task: StoredTask) -> bool:
        """True if the task has not been handed out yet (so it can be cancelled in place)."""
        return task.task_id in self._waiting.get(task.session_id, ())

    async def _advance(self, session_id: str) -> int:
        async with self._lock(session_id):
            return await self._advance_locked(session_id)

    async def _advance_locked(self, session_id: str) -> int:
        waiting = self._waiting.get(session_id)
        while waiting:
            task = await self._records.get_task(waiting.popleft())
            if task.status.is_final:
                continue
            self._active[session_id] = task.task_id
            await self._publish(task)
            await self._records.update_task(task.task_id, _mark_dispatched)
            return 1
        self._waiting.pop(session_id, None)
        return 0

    async def _publish(self, task: StoredTask) -> None:
        context = await self._records.get_context(task.session_id)
        message = TaskMessage(
            task_id=task.task_id,
            session_id=task.session_id,
            service_id=task.service_id,
            deployment=self._records.deployment,
            input=json.loads(task.input) if task.input.strip() else {},
            context=context,
            timeout=self._timeouts.get(task.service_id),
        )
        await self._queue.publish(
            topics.service_topic(self._records.deployment, task.service_id),
            message.model_dump_json().encode(),
            msg_id=start_msg_id(task.task_id),
            key=task.session_id,
        )


def _mark_dispatched(task: StoredTask) -> bool:
    if task.dispatched or task.status.is_final:
        return False
    task.dispatched = True
    return True
