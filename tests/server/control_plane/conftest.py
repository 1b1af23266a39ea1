"""The control-plane test harness: a real ZeroMQ broker and a memory state store, with the worker's
side of the protocol played by the test (so each report can be timed and repeated at will)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from llamactl.server.control_plane import ControlPlane, ControlPlaneSettings, ServiceInfo, ServiceRegistry
from llamactl.server.mq import topics
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.protocol import TaskMessage, WorkerMessage, WorkerMessageKind, event_msg_id, final_msg_id
from llamactl.server.state.base import StateStore
from llamactl.server.state.memory import MemoryStateStore

DEPLOYMENT = "cp"


def record_calls(monkeypatch: pytest.MonkeyPatch, store: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the positional arguments of each call of the store's async method ``name`` (the
    call is still made)."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(store, name)

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, name, recorded)
    return calls


def event_report(task_id: str, index: int, event: dict[str, Any], service: str = "a") -> WorkerMessage:
    """The task's event ``index`` (an envelope: value, type, qualified_name), as its worker reports it."""
    return WorkerMessage(
        kind=WorkerMessageKind.TASK_EVENT,
        replica_id=f"{service}#1",
        service_id=service,
        task_id=task_id,
        event=event,
        event_index=index,
    )


def progress(task_id: str, n: int, service: str = "a") -> WorkerMessage:
    """The task's ``n``-th event report, a ``Progress`` with value ``{"n": n}`` (attempt 1)."""
    return event_report(
        task_id, n, {"value": {"n": n}, "type": "Progress", "qualified_name": "m.Progress"}, service
    )


def completed(task_id: str, result: object, **fields: Any) -> WorkerMessage:
    """A task.completed report of replica ``a#1`` (``fields``: event_index, events, ...)."""
    return WorkerMessage(
        kind=WorkerMessageKind.TASK_COMPLETED,
        replica_id="a#1",
        service_id="a",
        task_id=task_id,
        result=result,
        **fields,
    )


class Harness:
    def __init__(self, broker: ZeroMQBroker, store: StateStore) -> None:
        self.broker = broker
        self.store = store
        self.queues: list[MessageQueue] = []
        self.planes: list[ControlPlane] = []

    async def queue(self) -> MessageQueue:
        queue = connect_queue(self.broker.client_config)
        await queue.start()
        self.queues.append(queue)
        return queue

    async def control_plane(self, settings: ControlPlaneSettings | None = None) -> ControlPlane:
        registry = ServiceRegistry(
            [ServiceInfo(service_id="a", name="A"), ServiceInfo(service_id="b", name="B")]
        )
        plane = ControlPlane(
            DEPLOYMENT,
            store=self.store,
            queue=await self.queue(),
            orchestrator=Orchestrator(DEPLOYMENT, ["a", "b"], "a"),
            registry=registry,
            settings=settings,
        )
        await plane.start()
        self.planes.append(plane)
        return plane

    async def close(self) -> None:
        """Close what the test made through the harness: control planes, then their queues."""
        for plane in self.planes:
            await plane.close()
        for queue in self.queues:
            await queue.close()

    async def progress(self, queue: MessageQueue, task_id: str, n: int, service: str = "a") -> None:
        """Report the task's ``n``-th event, a ``Progress`` with value ``{"n": n}`` (attempt 1)."""
        await self.report(queue, progress(task_id, n, service), event_msg_id(task_id, 1, n))

    async def report(self, queue: MessageQueue, msg: WorkerMessage, msg_id: str) -> None:
        await queue.publish(
            topics.control_topic(DEPLOYMENT),
            msg.model_dump_json().encode(),
            msg_id=msg_id,
            key=msg.task_id or "",
        )

    async def finish(
        self, queue: MessageQueue, task: TaskMessage, result: Any, context: dict[str, Any] | None = None
    ) -> None:
        msg = WorkerMessage(
            kind=WorkerMessageKind.TASK_COMPLETED,
            replica_id="a#1",
            service_id=task.service_id,
            task_id=task.task_id,
            result=result,
            context=context,
        )
        await self.report(queue, msg, final_msg_id(task.task_id))


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite", heartbeat_interval=0.2)
    await broker.start()
    store = MemoryStateStore()
    await store.start()
    h = Harness(broker, store)
    try:
        yield h
    finally:
        await h.close()
        await store.close()
        await broker.close()


class Deliveries:
    """Pumps a consume iterator into a queue, so a test can wait for the next delivery with a
    timeout (cancelling ``anext`` on an async generator would end the generator)."""

    def __init__(self, queue: MessageQueue, service: str = "a", prefetch: int = 8) -> None:
        self._items: asyncio.Queue[Delivery] = asyncio.Queue()
        self._iterator = queue.consume(
            topics.service_topic(DEPLOYMENT, service), prefetch=prefetch, lease=30.0
        )
        self._pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for delivery in self._iterator:
            self._items.put_nowait(delivery)

    async def take(self, timeout: float = 10.0) -> tuple[Delivery, TaskMessage]:
        delivery = await asyncio.wait_for(self._items.get(), timeout)
        return delivery, TaskMessage.model_validate_json(delivery.message.payload)

    async def aclose(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class Server:
    """What ``llamactl serve`` runs in one process: a broker whose reports go direct, and a
    control plane linked to it in-process."""

    def __init__(self, journal: Path, store: MemoryStateStore) -> None:
        self.broker = ZeroMQBroker(
            journal_path=journal, direct_topics=[topics.control_topic(DEPLOYMENT)], heartbeat_interval=0.2
        )
        self.store = store
        self.plane: ControlPlane | None = None
        self.worker: MessageQueue | None = None

    async def start(self) -> tuple[ControlPlane, MessageQueue]:
        await self.broker.start()
        queue = self.broker.connect_local()
        await queue.start()
        self.plane = ControlPlane(
            DEPLOYMENT,
            store=self.store,
            queue=queue,
            orchestrator=Orchestrator(DEPLOYMENT, ["a"], "a"),
            registry=ServiceRegistry([ServiceInfo(service_id="a", name="A")]),
        )
        await self.plane.start()
        self.worker = connect_queue(self.broker.client_config)
        await self.worker.start()
        return self.plane, self.worker

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        if self.plane is not None:
            await self.plane.close()
            await self.plane.queue.close()
        await self.broker.close()


def report(kind: WorkerMessageKind, task_id: str, attempt: int, **fields: object) -> bytes:
    msg = WorkerMessage(
        kind=kind, replica_id="a#1", service_id="a", task_id=task_id, attempt=attempt, **fields
    )
    return msg.model_dump_json().encode()
