"""AdaptiveLimit when the tasks holding every slot do not end for a long while (each waits for a
person's answer, or a slow call): a limit lowered while earlier tasks computed must not keep new
tasks out for as long as they wait."""

from __future__ import annotations

import asyncio

from llamactl.server.services.concurrency import FLOOR, WINDOW

from .test_concurrency import Clocks, brought_to_the_floor, start


async def test_tasks_that_wait_long_in_every_slot_bring_a_lowered_limit_back_up() -> None:
    clocks = Clocks()
    limit = await brought_to_the_floor(clocks)
    waiting = await start(limit, FLOOR)  # each waits for a person: none ends for minutes
    clocks.advance(WINDOW * 1.2, busy=0.01)  # the loop idle meanwhile
    async with asyncio.timeout(20 * WINDOW):
        more = await limit.acquire()
    more.begin()
    assert limit.limit > FLOOR
    for slot in [*waiting, more]:
        slot.release()


async def test_tasks_that_compute_in_every_slot_without_ending_keep_the_limit() -> None:
    clocks = Clocks()
    limit = await brought_to_the_floor(clocks)
    computing = await start(limit, FLOOR)
    clocks.advance(WINDOW * 1.2, busy=1.0)  # the loop busy with them all along
    taking = asyncio.create_task(limit.acquire())
    done, _ = await asyncio.wait({taking}, timeout=4 * WINDOW)
    assert not done
    assert limit.limit == FLOOR
    taking.cancel()
    for slot in computing:
        slot.release()
