"""A run's events on their way to the queue: in order, several at once up to a window, and a
failed publish raised where the run or its report will see it."""

from __future__ import annotations

import asyncio

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.services.event_pipe import WINDOW, WINDOW_BYTES, EventPipe


class Broker:
    """Publishes that wait until the test confirms them, recording the order they started in."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.confirms: dict[int, asyncio.Future[None]] = {}

    async def publish(self, n: int) -> None:
        self.started.append(n)
        self.confirms[n] = asyncio.get_running_loop().create_future()
        await self.confirms[n]

    def confirm(self, n: int, error: BaseException | None = None) -> None:
        if error is None:
            self.confirms[n].set_result(None)
        else:
            self.confirms[n].set_exception(error)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_events_leave_in_order_without_waiting_for_their_confirms_up_to_the_window() -> None:
    broker, pipe = Broker(), EventPipe(ordered=True)
    for n in range(WINDOW):
        await asyncio.wait_for(pipe.send(broker.publish(n), 10), 1)  # none of these waits
    await settle()
    assert broker.started == list(range(WINDOW))
    full = asyncio.create_task(pipe.send(broker.publish(WINDOW), 10))
    await settle()
    assert not full.done() and WINDOW not in broker.started  # waits for the oldest
    broker.confirm(0)
    await asyncio.wait_for(full, 1)
    await settle()
    assert broker.started == list(range(WINDOW + 1))
    draining = asyncio.create_task(pipe.drain())
    for n in range(1, WINDOW + 1):
        await settle()
        assert not draining.done()
        broker.confirm(n)
    await asyncio.wait_for(draining, 1)


async def test_bytes_bound_the_window_too() -> None:
    broker, pipe = Broker(), EventPipe(ordered=True)
    await pipe.send(broker.publish(0), WINDOW_BYTES - 10)
    blocked = asyncio.create_task(pipe.send(broker.publish(1), 20))
    await settle()
    assert not blocked.done() and broker.started == [0]
    broker.confirm(0)
    await asyncio.wait_for(blocked, 1)
    await settle()
    assert broker.started == [0, 1]
    big = asyncio.create_task(pipe.send(broker.publish(2), 2 * WINDOW_BYTES))  # alone, it goes
    await settle()
    assert not big.done()
    broker.confirm(1)
    await asyncio.wait_for(big, 1)


async def test_a_queue_that_may_reorder_gets_one_event_at_a_time_and_the_run_goes_on() -> None:
    broker, pipe = Broker(), EventPipe(ordered=False)
    await asyncio.wait_for(pipe.send(broker.publish(0), 10), 1)  # the run goes on at once
    second = asyncio.create_task(pipe.send(broker.publish(1), 10))
    await settle()
    assert broker.started == [0] and not second.done()  # not started before the first's confirm
    broker.confirm(0)
    await asyncio.wait_for(second, 1)
    await settle()
    assert broker.started == [0, 1]


async def test_a_failed_publish_is_raised_by_the_next_event_and_by_the_drain() -> None:
    broker, pipe = Broker(), EventPipe(ordered=True)
    await pipe.send(broker.publish(0), 10)
    await settle()
    broker.confirm(0, PublishRejected("no confirm"))
    await settle()
    with pytest.raises(PublishRejected):
        await pipe.send(broker.publish(1), 10)
    await settle()
    assert broker.started == [0]  # the event after the failure never left

    pipe = EventPipe(ordered=True)
    await pipe.send(broker.publish(2), 10)
    await settle()
    broker.confirm(2, PublishRejected("no confirm"))
    with pytest.raises(PublishRejected):
        await pipe.drain()


async def test_cancel_stops_what_is_on_its_way() -> None:
    broker, pipe = Broker(), EventPipe(ordered=True)
    await pipe.send(broker.publish(0), 10)
    await pipe.send(broker.publish(1), 10)
    await settle()
    broker.confirm(0, PublishRejected("gone"))
    await settle()
    pipe.cancel()
    await settle()
    assert broker.confirms[1].cancelled()
    await pipe.drain()  # nothing left
