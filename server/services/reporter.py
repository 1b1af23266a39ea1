"""A replica's reports to the control plane: the WorkerMessages it publishes on the deployment's
control topic (see :mod:`llamactl.server.protocol`), and the ones that settle a task's delivery
with them (its result, its suspension)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from pydantic_core import PydanticSerializationError

from llamactl.server.errors import LeaseLost, PublishRejected, ResultTooLarge
from llamactl.server.mq import topics
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind, final_msg_id, suspended_msg_id
from llamactl.server.services.spec import WorkerSpec

from .errorinfo import error_line

__all__ = ["SUSPEND_REPORT_TIMEOUT", "Reporter"]

log = logging.getLogger(__name__)

SUSPEND_REPORT_TIMEOUT = 5.0
"""Seconds a stopping replica gives a suspended task's report (with the delivery's ack) to be
confirmed; past them the delivery goes back unsettled (the queue settles both or neither)."""


class Reporter:
    """Builds and publishes a replica's WorkerMessages on the deployment's control topic."""

    def __init__(self, spec: WorkerSpec, queue: MessageQueue) -> None:
        self.spec = spec
        self.queue = queue
        self.topic = topics.control_topic(spec.deployment)
        self._host = socket.gethostname()

    def message(self, kind: WorkerMessageKind, *, in_flight: int = 0, **fields: Any) -> WorkerMessage:
        """A WorkerMessage of this replica, stamped now."""
        return WorkerMessage(
            kind=kind,
            replica_id=self.spec.replica_id,
            service_id=self.spec.service_id,
            generation=self.spec.generation,
            pid=os.getpid(),
            host=self._host,
            in_flight=in_flight,
            max_concurrency=self.spec.max_concurrency,
            at=time.time(),
            **fields,
        )

    def encode(self, msg: WorkerMessage) -> bytes:
        """``msg`` as it goes on the queue.

        Raises:
            ResultTooLarge: it is larger than the service's ``max-result-size``.
        """
        payload = msg.model_dump_json().encode()
        if len(payload) > self.spec.max_result_size:
            if msg.kind == WorkerMessageKind.TASK_EVENT:
                what = f"event {msg.event_index} of task {msg.task_id}"
            elif msg.kind == WorkerMessageKind.TASK_SUSPENDED:
                what = f"the Context of task {msg.task_id} as it waited for an answer"
            else:
                what = f"the result of task {msg.task_id} (with its Context)"
            raise ResultTooLarge(what, len(payload), self.spec.max_result_size, self.spec.service_id)
        return payload

    async def publish(self, msg: WorkerMessage, *, msg_id: str | None = None) -> None:
        """Publish ``msg`` (key: its task id, so one task's messages stay in order; else the replica id).

        Raises:
            ResultTooLarge: see :meth:`encode`.
        """
        await self.publish_encoded(msg, self.encode(msg), msg_id=msg_id)

    async def publish_encoded(self, msg: WorkerMessage, payload: bytes, *, msg_id: str | None = None) -> None:
        """Publish ``msg`` already encoded (``payload``: :meth:`encode`)."""
        await self.publish_payload(payload, msg_id=msg_id, key=msg.task_id or self.spec.replica_id)

    async def publish_payload(self, payload: bytes, *, msg_id: str | None, key: str) -> None:
        """Publish an encoded report under ``key`` (its task's id: one task's reports stay in order)."""
        await self.queue.publish(self.topic, payload, msg_id=msg_id, key=key)

    async def finish(self, delivery: Delivery, msg: WorkerMessage, payload: bytes, *, msg_id: str) -> None:
        """Publish a task's final report (``msg`` encoded) and ack its delivery, together (see
        ``ack_and_publish``)."""
        await delivery.ack_and_publish(
            self.topic, payload, msg_id=msg_id, key=msg.task_id or self.spec.replica_id
        )

    async def suspended(self, delivery: Delivery, msg: WorkerMessage) -> None:
        """Publish a task.suspended report (a run stopped at its question) and ack its delivery,
        together: the control plane hands the task out again from there. A run whose Context
        could not be saved (or is too large to send, or the queue is down) leaves its delivery
        unsettled instead (raises CancelledError): given back uncharged, the task runs again from
        its start."""
        try:
            payload = self.encode(msg) if msg.context is not None else None
        except ResultTooLarge as exc:
            log.warning("task %s runs again from its start: %s", msg.task_id, exc)
            payload = None
        if payload is not None and self.queue.outage is not None:
            log.warning("task %s runs again from its start: %s", msg.task_id, self.queue.outage.describe())
            payload = None
        if payload is None:
            raise asyncio.CancelledError  # the delivery goes back with the consumer, uncharged
        msg_id = suspended_msg_id(msg.task_id or "", msg.attempt)
        try:
            # A stop must not wait, past its grace and into a SIGKILL, for a queue that does not answer.
            async with asyncio.timeout(SUSPEND_REPORT_TIMEOUT):
                await self.finish(delivery, msg, payload, msg_id=msg_id)
        except TimeoutError:
            log.warning(
                "task %s: the queue did not confirm where it waits within %g s: it runs again from its "
                "start, unless the queue took it after all",
                msg.task_id,
                SUSPEND_REPORT_TIMEOUT,
            )
            raise asyncio.CancelledError from None
        log.info("task %s waits for an answer: it goes on from its question on the next worker", msg.task_id)

    def _failed(self, final: WorkerMessage, error: str) -> tuple[WorkerMessage, bytes]:
        """``final`` turned into the task's failure with ``error`` (what it would send cannot be sent)."""
        log.error("task %s failed: %s", final.task_id, error)
        final = final.model_copy(
            update={
                "kind": WorkerMessageKind.TASK_FAILED,
                "result": None,
                "context": None,
                "events": [],
                "error": error,
                "traceback": None,
            }
        )
        return final, self.encode(final)

    def _encodable(self, final: WorkerMessage) -> tuple[WorkerMessage, bytes]:
        """``final``, which does not encode, with its error and traceback escaped where UTF-8
        cannot encode them (the task's own error, kept); when it still does not encode (its
        result, events or Context), the task's failure saying so."""
        final = final.model_copy(
            update={"error": _escaped(final.error), "traceback": _escaped(final.traceback)}
        )
        try:
            return final, self.encode(final)
        except PydanticSerializationError as exc:
            error = (
                f"NotEncodable: the result of task {final.task_id} (with its Context) holds text that "
                f"UTF-8 cannot encode ({_escaped(error_line(exc))}): decode bytes with errors='replace', "
                "or return them as base64"
            )
            return self._failed(final, error)
        except ResultTooLarge as exc:
            return self._failed(final, f"ResultTooLarge: {exc}")

    async def final(self, delivery: Delivery, final: WorkerMessage) -> None:
        """Publish the result and settle the delivery, in one step; while the queue refuses it (its
        journal's disk is full, say) try again, as long as the lease is kept. A result over the
        service's ``max-result-size`` fails the task instead (running it again would not shrink it)."""
        try:
            payload = self.encode(final)
        except PydanticSerializationError:
            # Text UTF-8 cannot encode (a lone surrogate: os.fsdecode of a name that is not UTF-8).
            # Not the queue failing: given back, the task would only run again to the same end.
            final, payload = self._encodable(final)
        except ResultTooLarge as exc:
            final, payload = self._failed(final, f"ResultTooLarge: {exc}")
        delay = 0.05
        deadline = time.monotonic() + self.spec.lease * 2
        while True:
            try:
                # The result goes out and the delivery is settled in one step: a crash of this
                # worker right after cannot bring the task back to run a second time.
                await self.finish(delivery, final, payload, msg_id=final_msg_id(final.task_id or ""))
                return
            except LeaseLost:
                log.warning(
                    "task %s was no longer this worker's (another attempt settled it, the server took "
                    "it back, or the queue lost it): its result went out all the same, and counts if "
                    "it is the task's first",
                    final.task_id,
                )
                return
            except PublishRejected as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("the result of task %s was refused (%s): trying again", final.task_id, exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)


def _escaped(text: str | None) -> str | None:
    """``text`` with what UTF-8 cannot encode (lone surrogates) written as Python escapes."""
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
