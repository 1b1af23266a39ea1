"""A run's events on their way to the queue: in order, several reports at once up to a window,
the events that come while it is full held and sent together in one report, and a failed
publish raised where the run or its report will see it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.services.event_pipe import BATCH_EVENTS, WINDOW, WINDOW_BYTES, EventPipe


class Broker:
    """Publishes that wait until the test confirms them (by the order they started in),
    recording what each one carried: ``(first index, how many events)``."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def one(self, index: int, payload: bytes) -> None:
        await self._publish(index, 1)

    async def many(self, index: int, envelopes: list[dict[str, Any]]) -> None:
        assert [e["i"] for e in envelopes] == list(range(index, index + len(envelopes)))
        await self._publish(index, len(envelopes))

    async def _publish(self, index: int, count: int) -> None:
        self.started.append((index, count))
        self.confirms.append(asyncio.get_running_loop().create_future())
        await self.confirms[-1]

    def confirm(self, n: int, error: BaseException | None = None) -> None:
        if error is None:
            self.confirms[n].set_result(None)
        else:
            self.confirms[n].set_exception(error)

    def pipe(self, *, ordered: bool = True, batch_bytes: int = 1024 * 1024) -> EventPipe:
        return EventPipe(self.one, self.many, ordered=ordered, batch_bytes=batch_bytes)


def send(pipe: EventPipe, i: int, payload: bytes | None = None) -> Any:
    return pipe.send(i, {"i": i}, payload if payload is not None else f"event {i}".encode())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_events_leave_alone_up_to_the_window_then_together_once_a_confirm_is_back() -> None:
    broker = Broker()
    pipe = broker.pipe()
    for i in range(WINDOW + 10):
        await asyncio.wait_for(send(pipe, i), 1)  # none of these waits
    await settle()
    assert broker.started == [(i, 1) for i in range(WINDOW)]  # the rest are held
    broker.confirm(0)
    await settle()
    # the held ones leave as one report, though the run wrote nothing since
    assert broker.started[WINDOW:] == [(WINDOW, 10)]
    await asyncio.wait_for(send(pipe, WINDOW + 10), 1)
    await settle()
    assert len(broker.started) == WINDOW + 1  # held: the window is full again
    draining = asyncio.create_task(pipe.drain())
    for n in range(1, WINDOW + 1):
        await settle()
        assert not draining.done()
        broker.confirm(n)
    await settle()
    assert broker.started[-1] == (WINDOW + 10, 1)  # the last one alone: a batch of one is not one
    assert not draining.done()
    broker.confirm(WINDOW + 1)
    await asyncio.wait_for(draining, 1)


async def test_events_written_in_one_loop_turn_leave_together_at_its_end() -> None:
    """A step that writes several events one after the other (no await between) sends one
    report; an event written alone leaves alone, at the end of its turn, with nothing more sent."""
    broker = Broker()
    pipe = broker.pipe()
    for i in range(3):
        await send(pipe, i)  # no suspension: the same loop turn
    assert broker.started == []
    await settle()
    assert broker.started == [(0, 3)]
    await send(pipe, 3)
    await settle()
    assert broker.started == [(0, 3), (3, 1)]
    broker.confirm(0)
    broker.confirm(1)
    await asyncio.wait_for(pipe.drain(), 1)

    # a whole batch written in one turn leaves at once, the window having room
    for i in range(4, 5 + BATCH_EVENTS):
        await send(pipe, i)
    await settle()
    assert broker.started[2:] == [(4, BATCH_EVENTS), (4 + BATCH_EVENTS, 1)]


async def test_a_run_waits_only_when_a_whole_batch_is_held() -> None:
    broker = Broker()
    pipe = broker.pipe(ordered=False)
    await send(pipe, 0)
    await settle()  # it leaves alone: the others are held while it is on its way
    for i in range(1, BATCH_EVENTS + 1):
        await asyncio.wait_for(send(pipe, i), 1)
    full = asyncio.create_task(send(pipe, BATCH_EVENTS + 1))
    await settle()
    assert not full.done() and broker.started == [(0, 1)]
    broker.confirm(0)
    await asyncio.wait_for(full, 1)
    await settle()
    assert broker.started == [(0, 1), (1, BATCH_EVENTS)]  # the event that waited is held now

    broker = Broker()
    pipe = broker.pipe(ordered=False, batch_bytes=100)
    await send(pipe, 0)
    await settle()
    await send(pipe, 1, b"x" * 60)
    full = asyncio.create_task(send(pipe, 2, b"x" * 60))  # over the batch's bytes
    await settle()
    assert not full.done()


async def test_bytes_bound_the_window_too() -> None:
    broker = Broker()
    pipe = broker.pipe(batch_bytes=WINDOW_BYTES)
    await send(pipe, 0, b"x" * (WINDOW_BYTES - 10))
    await send(pipe, 1, b"x" * 20)  # held: over the window's bytes
    await settle()
    assert broker.started == [(0, 1)]
    broker.confirm(0)
    await settle()
    assert broker.started == [(0, 1), (1, 1)]


async def test_a_queue_that_may_reorder_gets_one_report_at_a_time_and_the_run_goes_on() -> None:
    broker = Broker()
    pipe = broker.pipe(ordered=False)
    for i in range(4):
        await asyncio.wait_for(send(pipe, i), 1)  # the run goes on at once
    await settle()
    assert broker.started == [(0, 1)]  # the others wait for its confirm
    broker.confirm(0)
    await settle()
    assert broker.started == [(0, 1), (1, 3)]


async def test_a_failed_publish_is_raised_by_the_next_event_and_by_the_drain() -> None:
    broker = Broker()
    pipe = broker.pipe(ordered=False)
    await send(pipe, 0)
    await settle()
    await send(pipe, 1)  # held
    await settle()
    broker.confirm(0, PublishRejected("no confirm"))
    await settle()
    assert broker.started == [(0, 1)]  # what was held never left
    with pytest.raises(PublishRejected):
        await send(pipe, 2)
    with pytest.raises(PublishRejected):
        await pipe.drain()

    pipe = broker.pipe()
    await send(pipe, 3)
    await settle()
    broker.confirm(1, PublishRejected("no confirm"))
    with pytest.raises(PublishRejected):
        await pipe.drain()


async def test_cancel_stops_what_is_on_its_way_and_drops_what_is_held() -> None:
    broker = Broker()
    pipe = broker.pipe(ordered=False)
    await send(pipe, 0)
    await settle()
    await send(pipe, 1)
    await settle()
    pipe.cancel()
    await settle()
    assert broker.confirms[0].cancelled() and broker.started == [(0, 1)]
    await pipe.drain()  # nothing left
