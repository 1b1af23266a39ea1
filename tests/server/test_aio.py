"""cancel_and_wait: the task ends, and a cancel of the caller is never taken for the task's own."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from llamactl.server.aio import cancel_and_wait
from llamactl.server.control_plane.loops import Loops


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _slow_to_stop(stopping: asyncio.Event, *, swallow: bool = False) -> None:
    """Sleeps until cancelled, then takes a while to wind down (and, with ``swallow``, returns)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        stopping.set()
        await asyncio.sleep(0.1)
        if not swallow:
            raise


async def test_the_task_is_cancelled_and_has_ended_on_return() -> None:
    task = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_another_error_the_task_ends_with_is_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


@pytest.mark.parametrize("swallow", [False, True], ids=["task-raises", "task-swallows"])
async def test_a_cancel_of_the_caller_while_the_task_winds_down_reaches_the_caller(swallow: bool) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(stopping, swallow=swallow))
    await asyncio.sleep(0)
    after: list[str] = []

    async def caller() -> None:
        await cancel_and_wait(task)
        after.append("ran on")

    outer = asyncio.create_task(caller())
    await stopping.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert after == []
    assert task.done()


async def test_a_cancel_of_the_caller_wins_over_an_error_the_task_ends_with() -> None:
    """A caller that suppresses the task's own errors (the Redis client suppresses connection
    errors) must still see its cancel."""
    stopping = asyncio.Event()

    async def fails_slowly_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopping.set()
            with contextlib.suppress(asyncio.CancelledError):  # a cleanup that cannot be cut short
                await asyncio.sleep(0.1)
            raise OSError("connection reset while closing") from None

    task = asyncio.create_task(fails_slowly_on_cancel())
    await asyncio.sleep(0)

    async def caller() -> None:
        with contextlib.suppress(OSError):
            await cancel_and_wait(task)

    outer = asyncio.create_task(caller())
    await stopping.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_a_stop_of_a_loop_can_itself_be_cancelled() -> None:
    """Loops.stop once wrapped ``await task`` in suppress(CancelledError): a stop cancelled while
    its loop wound down returned normally, and whatever awaited it ran on."""
    stopping = asyncio.Event()
    loops = Loops("test")
    loops.start("slow", lambda: _slow_to_stop(stopping))
    await asyncio.sleep(0.01)
    stop = asyncio.create_task(loops.stop("slow"))
    await stopping.wait()
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
