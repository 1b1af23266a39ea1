"""Publishes a task's start message to its service, and keeps the ones the queue refused.

The message carries the task's input, the session's Context as stored now, and the service's
timeout; its id is ``<task_id>:start``, so publishing it again (a retry, a restart, another
server picking up what a dead one left) starts the task once. It is published restorable: the
task record is its durable copy (:meth:`Dispatcher.recover` publishes it again after a restart,
with the attempts the record has seen), so an embedded broker need not journal it. A publish
the queue refuses (it is down, its journal full) is kept in :attr:`TaskPublisher.unpublished`
and :attr:`TaskPublisher.retry` is set, for the dispatcher's retry loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.errors import MessageQueueError
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import TaskMessage, start_msg_id

__all__ = ["TaskPublisher"]

log = logging.getLogger(__name__)

Unsendable = Callable[[StoredTask, str], Awaitable[None]]


class TaskPublisher:
    def __init__(
        self,
        records: ControlPlaneRecords,
        queue: MessageQueue,
        timeouts: Mapping[str, float | None],
        *,
        unsendable: Unsendable,
    ) -> None:
        self._records = records
        self._queue = queue
        self.timeouts = dict(timeouts)
        self._unsendable = unsendable
        self.unpublished: dict[str, str] = {}
        """task id -> session id: handed out here, its publish has not gone through yet."""
        self.retry = asyncio.Event()
        """Set when something waits for a retry."""

    def message(self, task: StoredTask, context: dict[str, Any] | None) -> bytes:
        """The task's start message."""
        message = TaskMessage(
            task_id=task.task_id,
            session_id=task.session_id,
            service_id=task.service_id,
            deployment=self._records.deployment,
            input=json.loads(task.input) if task.input.strip() else {},
            context=context,
            timeout=self.timeouts.get(task.service_id),
            keep_context=task.keep_context,
        )
        return message.model_dump_json().encode()

    async def publish(self, task: StoredTask) -> None:
        """Publish the task's start message; if the queue fails, keep it for the retry loop. A
        task whose message cannot even be built goes to ``unsendable`` (it fails alone)."""
        try:
            context = None if task.own_session else await self._records.get_context(task.session_id)
            payload = self.message(task, context)
        except (ValueError, TypeError) as exc:
            await self._unsendable(task, f"the task cannot be handed to its service: {exc}")
            return
        try:
            await self._queue.publish_restorable(
                topics.service_topic(self._records.deployment, task.service_id),
                payload,
                msg_id=start_msg_id(task.task_id),
                key=task.session_id,
                attempts=task.attempts,
            )
        except MessageQueueError as exc:
            if task.task_id not in self.unpublished:
                log.warning("task %s not handed out yet (%s): retrying", task.task_id, exc)
            self.unpublished[task.task_id] = task.session_id
            self.retry.set()
            return
        self.unpublished.pop(task.task_id, None)
