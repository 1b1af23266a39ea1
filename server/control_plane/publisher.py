"""Publishes a task's start message to its service, keeps the ones the queue refused, and takes
messages back or asks a worker to stop a task.

The message carries the task's input, the session's Context as stored now, and the service's
timeout; its id is ``<task_id>:start``, so publishing it again (a retry, a restart, another
server picking up what a dead one left) starts the task once. A task suspended at a question
(:attr:`StoredTask.resume_from`) gets a resume message instead (``<task_id>:start@<attempt>``,
carrying its resume point: see ``protocol``), the same way. It is published restorable: the
task record is its durable copy (:meth:`Dispatcher.recover` publishes it again after a restart,
with the attempts the record has seen), so an embedded broker need not journal it. A publish
the queue refuses (it is down, its journal full) is kept in :attr:`TaskPublisher.unpublished`
and :attr:`TaskPublisher.retry` is set, for the dispatcher's retry loop; while the queue is known
to be unreachable (:attr:`MessageQueue.outage`), a new task goes there at once, so a client
creating it does not wait out the publish timeout.
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
from llamactl.server.protocol import TaskInput, TaskInputKind, TaskMessage, TaskResume, start_msg_id

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

    def message(
        self, task: StoredTask, context: dict[str, Any] | None, resume: TaskResume | None = None
    ) -> bytes:
        """The task's start message (``resume``: where it goes on from)."""
        message = TaskMessage(
            task_id=task.task_id,
            session_id=task.session_id,
            service_id=task.service_id,
            deployment=self._records.deployment,
            input=json.loads(task.input) if task.input.strip() else {},
            context=context,
            timeout=self.timeouts.get(task.service_id),
            keep_context=task.keep_context,
            resume=resume,
        )
        return message.model_dump_json().encode()

    def own_message(self, task: StoredTask) -> bytes | None:
        """The start message of a task in a session of its own (it carries no Context), or None
        if it cannot be built (then :meth:`publish` fails the task)."""
        try:
            return self.message(task, None)
        except (ValueError, TypeError):
            return None

    async def publish(self, task: StoredTask, payload: bytes | None = None) -> None:
        """Publish the task's start message (``payload``, if built already); if the queue fails,
        keep it for the retry loop. A task whose message cannot even be built goes to
        ``unsendable`` (it fails alone)."""
        if payload is None:
            try:
                resume = await self._resume(task)
                context = None
                if not task.own_session and (resume is None or resume.context is None):
                    context = await self._records.contexts.get(task.session_id)
                payload = self.message(task, context, resume)
            except (ValueError, TypeError) as exc:
                await self._unsendable(task, f"the task cannot be handed to its service: {exc}")
                return
        outage = self._queue.outage
        if outage is not None and task.task_id not in self.unpublished:
            # Known to be down: the caller (a client creating the task) need not wait out the
            # publish timeout; the retry loop tries it.
            log.warning("task %s not handed out yet (%s): retrying", task.task_id, outage.describe())
            self.unpublished[task.task_id] = task.session_id
            self.retry.set()
            return
        try:
            await self._queue.publish_restorable(
                topics.service_topic(self._records.deployment, task.service_id),
                payload,
                msg_id=start_msg_id(task.task_id, task.resume_from),
                key=task.session_id,
                attempts=task.attempts - task.resume_from,  # its own deliveries so far
            )
        except MessageQueueError as exc:
            if task.task_id not in self.unpublished:
                log.warning("task %s not handed out yet (%s): retrying", task.task_id, exc)
            self.unpublished[task.task_id] = task.session_id
            self.retry.set()
            return
        self.unpublished.pop(task.task_id, None)

    async def take_back(self, task: StoredTask, *, leased: bool = False) -> bool:
        """Remove the task's start message from its service's queue before a worker takes it
        (``leased``: from a worker that holds it, too). True if it was removed."""
        topic = topics.service_topic(self._records.deployment, task.service_id)
        return await self._queue.discard(topic, start_msg_id(task.task_id, task.resume_from), leased=leased)

    async def _resume(self, task: StoredTask) -> TaskResume | None:
        if not task.resume_from:
            return None
        resume = await self._records.get_resume(task.task_id)
        if resume is None:
            log.error("task %s lost where it waited for an answer: it runs from its start", task.task_id)
            return TaskResume(attempt=task.resume_from, context=None)
        return resume

    async def ask_to_stop(self, task_id: str) -> None:
        """The task runs (or is about to): its worker reads the cancel from its input stream."""
        await self._queue.publish(
            topics.task_input_topic(self._records.deployment, task_id),
            TaskInput(kind=TaskInputKind.CANCEL).model_dump_json().encode(),
            msg_id=f"{task_id}:cancel",
        )

    async def withdraw(self, task: StoredTask) -> None:
        """A task handed out before its record was stored, and the commit failed: take its
        message back, and ask its worker to stop it should one have it already (its report is
        then dropped: no record names the task). Best effort: the queue may be failing too."""
        self.unpublished.pop(task.task_id, None)
        try:
            if await self.take_back(task):
                return  # no worker had it: it never runs
            await self.take_back(task, leased=True)
            await self.ask_to_stop(task.task_id)
        except MessageQueueError as exc:
            log.warning("task %s was not stored and could not be taken back: %s", task.task_id, exc)
