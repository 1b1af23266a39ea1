"""Applies what workers report (and what the queue dead-letters) to the control plane's state.

Each report arrives as a leased delivery of the deployment's control topic and is acked only
after its effect is stored, so a control plane that dies mid-way gets it again; every effect is
idempotent (events carry idempotency keys, a final status is written once, the first result wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pydantic import ValidationError

from llamactl.server.control_plane.records import ControlPlaneRecords, StoredTask
from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.errors import LeaseLost, TaskNotFound
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.protocol import TaskMessage, WorkerMessage, WorkerMessageKind, event_msg_id
from llamactl.server.types import TaskStatus

__all__ = ["Inbox"]

log = logging.getLogger(__name__)

FinishedCallback = Callable[[StoredTask], Awaitable[None]]
StatusCallback = Callable[[StoredTask], None]

_FINAL_KIND = {
    WorkerMessageKind.TASK_COMPLETED: TaskStatus.COMPLETED,
    WorkerMessageKind.TASK_FAILED: TaskStatus.FAILED,
    WorkerMessageKind.TASK_CANCELLED: TaskStatus.CANCELLED,
}


class Inbox:
    def __init__(
        self,
        records: ControlPlaneRecords,
        registry: ServiceRegistry,
        *,
        on_status: StatusCallback,
        on_finished: FinishedCallback,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self._records = records
        self._registry = registry
        self._on_status = on_status
        self._on_finished = on_finished
        self._on_event = on_event or (lambda task_id: None)
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def consume(self, queue: MessageQueue, topic: str, *, dead_letters: bool = False) -> None:
        """Start consuming ``topic`` (the control topic, or a service's dead-letter topic)."""
        if topic in self._consumers:
            return
        self._consumers[topic] = asyncio.create_task(
            self._consume(queue, topic, dead_letters), name=f"inbox:{topic}"
        )

    async def stop_consuming(self, topic: str) -> None:
        task = self._consumers.pop(topic, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for topic in list(self._consumers):
            await self.stop_consuming(topic)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _consume(self, queue: MessageQueue, topic: str, dead_letters: bool) -> None:
        handler = self._handle_dead_letter if dead_letters else self._handle_report
        async for delivery in queue.consume(topic, prefetch=256, lease=30.0):
            # Reports of different tasks are applied concurrently; the queue hands out one
            # report per task (its key) at a time, so a task's own reports stay in order.
            job = asyncio.create_task(self._apply(delivery, handler))
            self._running.add(job)
            job.add_done_callback(self._running.discard)

    async def _apply(self, delivery: Delivery, handler: Callable[[Delivery], Awaitable[None]]) -> None:
        try:
            await handler(delivery)
        except (ValidationError, ValueError) as exc:
            log.error(
                "dropping malformed message %s on %s: %s",
                delivery.message.msg_id,
                delivery.message.topic,
                exc,
            )
        except TaskNotFound as exc:
            log.warning("dropping report for an unknown task: %s", exc)
        except Exception:
            log.exception("could not apply %s; it will be delivered again", delivery.message.msg_id)
            with contextlib.suppress(Exception):
                await delivery.nack(delay=1.0)
            return
        with contextlib.suppress(LeaseLost):
            await delivery.ack()

    async def _handle_report(self, delivery: Delivery) -> None:
        msg = WorkerMessage.model_validate_json(delivery.message.payload)
        kind = msg.kind
        if kind is WorkerMessageKind.REPLICA_UP:
            self._registry.replica_up(msg)
        elif kind is WorkerMessageKind.REPLICA_HEARTBEAT:
            self._registry.heartbeat(msg)
        elif kind is WorkerMessageKind.REPLICA_STOPPING:
            self._registry.replica_stopping(msg)
        elif kind is WorkerMessageKind.REPLICA_FAILED:
            self._registry.replica_failed(msg.service_id, msg.replica_id, _describe(msg), msg.generation)
        elif kind is WorkerMessageKind.TASK_STARTED:
            await self._task_started(msg)
        elif kind is WorkerMessageKind.TASK_EVENT:
            await self._task_event(msg)
        else:
            await self._task_final(msg, _FINAL_KIND[kind])

    async def _task_started(self, msg: WorkerMessage) -> None:
        applied = _Applied()

        def start(task: StoredTask) -> bool:
            applied.value = False
            if task.status.is_final or (task.status is TaskStatus.RUNNING and task.attempts >= msg.attempt):
                return False
            task.status = TaskStatus.RUNNING
            task.dispatched = True
            task.attempts = max(task.attempts, msg.attempt)
            task.replica_id = msg.replica_id
            task.started_at = task.started_at or (msg.at or time.time())
            applied.value = True
            return True

        task = await self._records.update_task(_task_id(msg), start)
        if applied.value:
            self._on_status(task)

    async def _task_event(self, msg: WorkerMessage) -> None:
        task_id = _task_id(msg)
        if msg.event is None or msg.event_index is None:
            raise ValueError("a task.event report needs event and event_index")
        await self._append_event(task_id, msg.attempt, msg.event_index, msg.event)
        self._on_event(task_id)

    async def _append_event(self, task_id: str, attempt: int, index: int, event: dict[str, Any]) -> None:
        envelope = dict(event)
        envelope["attempt"] = attempt
        await self._records.store.append(
            self._records.events_stream(task_id),
            json.dumps(envelope).encode(),
            idem_key=event_msg_id(task_id, attempt, index),
        )

    async def _task_final(self, msg: WorkerMessage, status: TaskStatus) -> None:
        task_id = _task_id(msg)
        current = await self._records.get_task(task_id)
        if current.status.is_final:
            return  # a late report from a replica whose lease had moved on: the first one won
        writes: list[Awaitable[object]] = []
        if msg.context is not None:
            writes.append(self._records.save_context(current.session_id, msg.context))
        first = msg.event_index or 0
        for offset, event in enumerate(msg.events):
            writes.append(self._append_event(task_id, msg.attempt, first + offset, event))

        applied = _Applied()

        def finish(task: StoredTask) -> bool:
            applied.value = False
            if task.status.is_final:
                return False
            task.status = status
            task.finished_at = msg.at or time.time()
            task.started_at = task.started_at or msg.started_at or task.finished_at
            task.attempts = max(task.attempts, msg.attempt)
            task.replica_id = msg.replica_id
            if status is TaskStatus.COMPLETED:
                task.result = msg.result
            else:
                task.error = msg.error or ("cancelled" if status is TaskStatus.CANCELLED else "failed")
                task.traceback = msg.traceback
            applied.value = True
            return True

        # Context, trailing events and the final status are submitted in this order within one
        # loop iteration, so they share one commit and the status is never seen before them.
        done = await asyncio.gather(*writes, self._records.update_task(task_id, finish))
        task = cast(StoredTask, done[-1])
        if msg.events:
            self._on_event(task_id)
        if applied.value:
            self._on_status(task)
            await self._on_finished(task)

    async def _handle_dead_letter(self, delivery: Delivery) -> None:
        message = TaskMessage.model_validate_json(delivery.message.payload)
        attempts = delivery.message.headers.get("x-attempts", "?")
        reason = delivery.message.headers.get("x-dead-reason", "its worker stopped before finishing")
        error = (
            f"gave up after {attempts} attempts: {reason} "
            f"(the '{message.service_id}' worker crashed or was killed while running it each time)"
        )

        applied = _Applied()

        def fail(task: StoredTask) -> bool:
            applied.value = False
            if task.status.is_final:
                return False
            task.status = TaskStatus.FAILED
            task.finished_at = time.time()
            task.error = error
            applied.value = True
            return True

        task = await self._records.update_task(message.task_id, fail)
        if applied.value:
            self._on_status(task)
            await self._on_finished(task)


class _Applied:
    """Whether the last run of a compare-and-set update changed the record."""

    value = False


def _task_id(msg: WorkerMessage) -> str:
    if not msg.task_id:
        raise ValueError(f"a {msg.kind} report needs a task_id")
    return msg.task_id


def _describe(msg: WorkerMessage) -> str:
    error = msg.error or "the worker failed to start"
    return f"{error}\n{msg.traceback}" if msg.traceback else error
