"""ZeroMQ-specific: results to a ``direct_topics`` topic go to their in-process consumer unjournaled.

The message a result settles stays in the journal until the result is acked, so a crash in
between runs that message again instead of losing the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.topics import dead_letter_topic
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue, pump, wire
from llamactl.server.mq.zeromq.unix_link import UnixLink

TASKS = "work.d.tasks"
REPORTS = "work.d.control"


def journal_rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql, args))


def task_pending(path: Path, msg_id: str) -> bool:
    rows = journal_rows(
        path,
        "SELECT 1 FROM work w JOIN msg m USING (topic, seq) WHERE m.topic = ? AND m.msg_id = ?",
        TASKS,
        msg_id,
    )
    return bool(rows)


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def next_delivery(it: AsyncIterator[Delivery], timeout: float = 5.0) -> Delivery:
    return await asyncio.wait_for(anext(it), timeout)


async def started(broker: ZeroMQBroker) -> MessageQueue:
    queue = broker.connect_local()
    await queue.start()
    return queue


@contextlib.asynccontextmanager
async def serving(
    path: Path, **options: Any
) -> AsyncIterator[tuple[ZeroMQBroker, MessageQueue, MessageQueue]]:
    """A broker whose REPORTS are direct, a worker's client and the control plane's."""
    broker = ZeroMQBroker(journal_path=path, direct_topics=[REPORTS], **options)
    await broker.start()
    worker, control = await started(broker), await started(broker)
    try:
        yield broker, worker, control
    finally:
        await worker.close()
        await control.close()
        await broker.close()


async def one_task(worker: MessageQueue, control: MessageQueue, msg_id: str = "t1") -> Delivery:
    """Publish a task and take its delivery as the worker."""
    await control.publish(TASKS, b"task", msg_id=msg_id)
    return await next_delivery(aiter(worker.consume(TASKS, prefetch=1)))


async def test_a_result_is_delivered_unjournaled_and_its_task_settles_once_the_result_is_acked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mq.sqlite"
    async with serving(path) as (_, worker, control):
        task = await one_task(worker, control)
        reports = aiter(control.consume(REPORTS, prefetch=8))
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        report = await next_delivery(reports)
        assert report.message.payload == b"result"
        # Nothing of the result was written, and the task is still pending in the journal.
        assert journal_rows(path, "SELECT msg_id FROM msg WHERE topic = ?", REPORTS) == []
        assert task_pending(path, "t1")
        await report.ack()
        await until(lambda: not task_pending(path, "t1"), "the task to be written done")
        assert journal_rows(path, "SELECT msg_id FROM msg WHERE topic = ?", REPORTS) == []


async def test_a_crash_before_the_result_is_acked_runs_the_task_again(tmp_path: Path) -> None:
    """Before results went unjournaled the result came back instead; now the task does."""
    path = tmp_path / "mq.sqlite"
    async with serving(path, heartbeat_interval=0.1) as (_, worker, control):
        task = await one_task(worker, control)
        reports = aiter(control.consume(REPORTS, prefetch=8))
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        await next_delivery(reports)  # received, never acked: the server dies now

    again = ZeroMQBroker(journal_path=path, direct_topics=[REPORTS], heartbeat_interval=0.1)
    await again.start()
    queue = await started(again)
    try:
        rerun = await next_delivery(aiter(queue.consume(TASKS, prefetch=1)))
        assert rerun.message.msg_id == "t1"
        assert rerun.attempt == 2
        assert journal_rows(path, "SELECT msg_id FROM msg WHERE topic = ?", REPORTS) == []
    finally:
        await queue.close()
        await again.close()


async def test_events_published_before_a_result_are_delivered_before_it(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (_, worker, control):
        for n in range(20):
            await control.publish(TASKS, b"task", msg_id=f"t{n}")
        tasks = aiter(worker.consume(TASKS, prefetch=20))
        reports = aiter(control.consume(REPORTS, prefetch=100))
        sends = []
        for _ in range(20):
            task = await next_delivery(tasks)
            key = task.message.msg_id
            # Sent in one go: the events are still being committed when the result arrives.
            sends += [
                worker.publish(REPORTS, f"{key}:{i}".encode(), msg_id=f"{key}:{i}", key=key) for i in range(3)
            ]
            sends.append(
                task.ack_and_publish(REPORTS, f"{key}:final".encode(), msg_id=f"{key}:final", key=key)
            )
        await asyncio.gather(*sends)
        seen: dict[str, list[str]] = {}
        for _ in range(80):
            report = await next_delivery(reports)
            key, _, what = report.message.payload.decode().partition(":")
            seen.setdefault(key, []).append(what)
            await report.ack()
        assert seen == {f"t{n}": ["0", "1", "2", "final"] for n in range(20)}


async def test_a_result_sent_twice_is_delivered_once_and_the_second_is_told_stale(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (broker, worker, control):
        task = await one_task(worker, control)
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        with pytest.raises(Exception, match="settled before"):
            await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        assert broker.late_results == 1
        reports = aiter(control.consume(REPORTS, prefetch=8))
        first = await next_delivery(reports)
        await first.ack()
        await control.publish(REPORTS, b"marker", msg_id="marker")
        assert (await next_delivery(reports)).message.payload == b"marker"  # no second copy before it


async def test_a_dead_lettered_result_settles_its_task(tmp_path: Path) -> None:
    path = tmp_path / "mq.sqlite"
    async with serving(path, max_attempts=1) as (_, worker, control):
        task = await one_task(worker, control)
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        report = await next_delivery(aiter(control.consume(REPORTS, prefetch=8)))
        await report.nack()  # the one attempt fails: the result goes to the dead-letter topic
        dead = await next_delivery(aiter(control.consume(dead_letter_topic(REPORTS), prefetch=1)))
        assert dead.message.payload == b"result"
        await until(lambda: not task_pending(path, "t1"), "the task to be written done")


@contextlib.asynccontextmanager
async def remote_worker(path: Path, transport: str) -> AsyncIterator[tuple[MessageQueue, MessageQueue]]:
    """A broker whose REPORTS are direct, the control plane's client and a worker in another
    process's place, over ``transport`` ("zeromq" or "unix")."""
    broker = ZeroMQBroker(journal_path=path, direct_topics=[REPORTS], unix=transport == "unix")
    await broker.start()
    control = await started(broker)
    worker = connect_queue(broker.client_config)
    await worker.start()
    assert isinstance(worker, ZeroMQQueue) and worker.transport == transport
    try:
        yield control, worker
    finally:
        await worker.close()
        await control.close()
        await broker.close()


async def remote_task(
    control: MessageQueue, worker: MessageQueue
) -> tuple[AsyncIterator[Delivery], Delivery]:
    """The worker's task iterator (one task at a time) and the delivery of a first task, t1."""
    tasks = aiter(worker.consume(TASKS, prefetch=1))
    await control.publish(TASKS, b"task", msg_id="t1")
    return tasks, await next_delivery(tasks)


def received_messages(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The commands of each ZeroMQ message, or each read on a Unix socket, that a client (not the
    broker) receives, from now on."""
    seen: list[list[bytes]] = []
    real = pump.unpack_parts

    def recording(parts: Sequence[bytes], *, routed: bool) -> list[list[bytes]]:
        messages = real(parts, routed=routed)
        if not routed:
            seen.append([m[0] for m in messages])
        return messages

    real_read = UnixLink._on_messages

    def recording_read(link: UnixLink, batch: list[list[bytes]]) -> None:
        seen.append([m[0] for m in batch])
        real_read(link, batch)

    monkeypatch.setattr(pump, "unpack_parts", recording)
    monkeypatch.setattr(UnixLink, "_on_messages", recording_read)
    return seen


@pytest.mark.parametrize("transport", ["zeromq", "unix"])
async def test_a_remote_workers_result_is_confirmed_in_the_message_that_brings_its_next_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    seen = received_messages(monkeypatch)
    async with remote_worker(tmp_path / "mq.sqlite", transport) as (control, worker):
        tasks, first = await remote_task(control, worker)
        await control.publish(TASKS, b"task", msg_id="t2")  # waits for the credit the result gives back
        seen.clear()
        await asyncio.wait_for(first.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1"), 5)
        second = await next_delivery(tasks)
        assert second.message.msg_id == "t2"
        assert [wire.DELIVER, wire.PUBACK] in seen  # one message: one wake-up of the worker


@pytest.mark.parametrize("transport", ["zeromq", "unix"])
async def test_a_confirm_with_nothing_to_ride_with_goes_alone_within_the_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    seen = received_messages(monkeypatch)
    async with remote_worker(tmp_path / "mq.sqlite", transport) as (control, worker):
        _, task = await remote_task(control, worker)
        seen.clear()
        started_at = time.monotonic()
        await asyncio.wait_for(task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1"), 5)
        assert time.monotonic() - started_at < 1.0  # the hold (5 ms), not a publish timeout
        assert [wire.PUBACK] in seen
