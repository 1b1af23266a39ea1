"""A replica's reports to the control plane: the WorkerMessages it publishes on the deployment's
control topic (see :mod:`llamactl.server.protocol`)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from llamactl.server.errors import ResultTooLarge
from llamactl.server.mq import topics
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.services.spec import WorkerSpec

__all__ = ["Reporter"]


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
        await self.queue.publish(
            self.topic, self.encode(msg), msg_id=msg_id, key=msg.task_id or self.spec.replica_id
        )

    async def finish(self, delivery: Delivery, msg: WorkerMessage, payload: bytes, *, msg_id: str) -> None:
        """Publish a task's final report (``msg`` encoded) and ack its delivery, together (see
        ``ack_and_publish``)."""
        await delivery.ack_and_publish(
            self.topic, payload, msg_id=msg_id, key=msg.task_id or self.spec.replica_id
        )
