"""ZeroMQ-specific: a result goes to a consumer in the broker's own process by a call.

A worker's result to a direct topic, for a task held in memory (``publish_restorable``), is taken
by the in-process consumer without a lease or frames while it has room; whatever it cannot take
or gives back goes through the dispatcher as before, in the same per-key order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.mq.topics import dead_letter_topic
from llamactl.server.mq.zeromq.consumer import LocalDelivery, ZeroMQDelivery

from .test_zeromq_direct import REPORTS, TASKS, journal_rows, next_delivery, serving, until


async def finish_one(worker: MessageQueue, control: MessageQueue, n: int = 1, *, key: str = "") -> None:
    """Publish ``n`` tasks held in memory; the worker takes each and sends its result."""
    for i in range(n):
        await control.publish_restorable(TASKS, b"task", msg_id=f"t{i}:start", key=key or f"s{i}")
    tasks = aiter(worker.consume(TASKS, prefetch=n))
    for _ in range(n):
        task = await next_delivery(tasks)
        name = task.message.msg_id.split(":")[0]
        await task.ack_and_publish(REPORTS, name.encode(), msg_id=f"{name}:final", key=key or name)


class Reports:
    """A consumer of REPORTS that is subscribed before anything is sent to it (a consume iterator
    subscribes at its first ``anext``): one ``anext`` is always under way."""

    def __init__(self, queue: MessageQueue, prefetch: int) -> None:
        self.it = aiter(queue.consume(REPORTS, prefetch=prefetch))
        self._next: asyncio.Future[Delivery] = asyncio.ensure_future(anext(self.it))

    @classmethod
    async def of(cls, queue: MessageQueue, prefetch: int) -> Reports:
        reports = cls(queue, prefetch)
        await until(lambda: any(s.topic == REPORTS for s in queue._subs.values()), "the subscription")  # type: ignore[attr-defined]
        return reports

    async def next(self, timeout: float = 5.0) -> Delivery:
        delivery = await asyncio.wait_for(asyncio.shield(self._next), timeout)
        self._next = asyncio.ensure_future(anext(self.it))
        return delivery

    async def nothing(self, within: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._next), within)

    async def stop(self) -> None:
        self._next.cancel()
        await asyncio.gather(self._next, return_exceptions=True)
        await self.it.aclose()  # type: ignore[attr-defined]


async def local_result(
    worker: MessageQueue, control: MessageQueue, *, prefetch: int = 8, tasks: int = 1
) -> tuple[Reports, LocalDelivery]:
    """A subscribed consumer of REPORTS and the first result it took by a call."""
    reports = await Reports.of(control, prefetch)
    await finish_one(worker, control, tasks)
    first = await reports.next()
    assert isinstance(first, LocalDelivery)
    return reports, first


async def test_a_result_is_taken_by_a_call_and_its_ack_settles_it_with_nothing_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mq.sqlite"
    async with serving(path) as (broker, worker, control):
        reports, report = await local_result(worker, control)
        assert (report.message.payload, report.message.msg_id, report.attempt) == (b"t0", "t0:final", 1)
        assert broker.handed_locally == 1
        await report.ack()
        with pytest.raises(LeaseLost):
            await report.ack()
        assert journal_rows(path, "SELECT msg_id FROM msg") == []
        await reports.nothing()  # settled: it does not come back
        await reports.stop()


async def test_results_beyond_the_consumers_prefetch_go_through_the_dispatcher(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (broker, worker, control):
        reports = await Reports.of(control, 2)
        await finish_one(worker, control, 5)
        got = [await reports.next() for _ in range(4)]  # 2 by a call, 2 on the broker's credit
        assert sum(isinstance(d, LocalDelivery) for d in got) == 2
        assert sum(isinstance(d, ZeroMQDelivery) for d in got) == 2
        assert broker.handed_locally == 2
        await reports.nothing()  # the fifth waits for room
        for d in got:
            await d.ack()
        fifth = await reports.next()
        assert fifth.message.payload not in {d.message.payload for d in got}
        await fifth.ack()
        await reports.stop()


async def test_a_nacked_result_comes_back_through_the_dispatcher(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (_, worker, control):
        reports, first = await local_result(worker, control, prefetch=1)
        await first.nack(delay=0.3)
        with pytest.raises(LeaseLost):
            await first.ack()
        await reports.nothing(within=0.1)  # held for the nack's delay
        again = await reports.next()
        assert isinstance(again, ZeroMQDelivery)
        assert (again.message.msg_id, again.attempt) == ("t0:final", 2)
        await again.ack()
        await reports.stop()


async def test_a_nack_that_uses_up_the_attempts_dead_letters_the_result(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite", max_attempts=1) as (_, worker, control):
        reports, report = await local_result(worker, control)
        await report.nack()
        dead = await next_delivery(aiter(control.consume(dead_letter_topic(REPORTS), prefetch=1)))
        assert dead.message.payload == b"t0"
        await reports.nothing()
        await reports.stop()


async def test_results_taken_but_not_handed_out_go_back_when_the_consumer_stops(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (_, worker, control):
        reports, taken = await local_result(worker, control, tasks=3)  # the other two wait in its buffer
        await reports.stop()
        later = await Reports.of(control, 8)
        got = {(await later.next()).message.payload for _ in range(2)}
        assert got == {b"t0", b"t1", b"t2"} - {taken.message.payload}
        await taken.ack()  # handed out before the stop: still its consumer's to settle
        await later.nothing()
        await later.stop()


async def test_a_result_held_when_its_client_closes_goes_to_another_client(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (broker, worker, control):
        reports, held = await local_result(worker, control)
        await reports.stop()  # its iterator ends while the delivery is still being applied
        await control.close()
        other = broker.connect_local()
        await other.start()
        try:
            again = await Reports.of(other, 8)
            assert (await again.next()).message.payload == b"t0"
            with pytest.raises(LeaseLost):
                await held.ack()
            await again.stop()
        finally:
            await other.close()


async def test_a_result_waits_for_its_tasks_events_still_in_the_dispatcher(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (broker, worker, control):
        await control.publish_restorable(TASKS, b"task", msg_id="t1:start", key="t1")
        task = await next_delivery(aiter(worker.consume(TASKS, prefetch=1)))
        reports = await Reports.of(control, 8)
        await worker.publish(REPORTS, b"event", msg_id="t1:0", key="t1")
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="t1")
        event = await reports.next()
        assert event.message.payload == b"event"
        await reports.nothing()  # the result waits for the event to be settled
        await event.ack()
        result = await reports.next()
        assert (result.message.payload, isinstance(result, ZeroMQDelivery)) == (b"result", True)
        assert broker.handed_locally == 0
        await result.ack()
        await reports.stop()


async def test_a_result_taken_by_a_call_can_be_settled_with_a_publish(tmp_path: Path) -> None:
    async with serving(tmp_path / "mq.sqlite") as (_, worker, control):
        reports = await Reports.of(control, 8)
        await control.publish_restorable(TASKS, b"task", msg_id="t0:start", key="t0")
        tasks = aiter(worker.consume(TASKS, prefetch=1))
        task = await next_delivery(tasks)
        await task.ack_and_publish(REPORTS, b"t0", msg_id="t0:final", key="t0")
        report = await reports.next()
        assert isinstance(report, LocalDelivery)
        seq = await report.ack_and_publish(TASKS, b"next", msg_id="n1")
        with pytest.raises(LeaseLost, match="settled or given back before"):
            await report.ack_and_publish(TASKS, b"next", msg_id="n1")  # absorbed as a duplicate
        follow_up = await next_delivery(tasks)
        assert (follow_up.message.msg_id, follow_up.message.seq) == ("n1", seq)
        await follow_up.ack()
        await reports.nothing()
        await reports.stop()
