"""A run whose code does not stop when cancelled (it takes the cancel for one more error and
goes on, or its cleanup takes long) still ends its task at its timeout or cancel, once the
cancel's grace is over; the code left running streams nothing more.

Before: the stop waited for the run for ever, so the task never ended: its timeout never came,
its slot and its lease stayed taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.execution import TaskOutcome, execute
from llamactl.server.services.replacement import ABANDONED_CALLS_LIMIT, ReplaceCheck
from llamactl.server.services.stopping import abandoned_runs

from .harness import DEADLINE, TaskIO, worker_spec

FAILED = WorkerMessageKind.TASK_FAILED
CANCELLED = WorkerMessageKind.TASK_CANCELLED
GRACE = 0.2


class Stubborn:
    """User code that ignores cancels until ``release`` is set (the test's end, or its deadline)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancels = 0
        self.yielded = 0
        self.mark: int | None = None
        self.passed_mark = asyncio.Event()
        """Set once ``streams_on`` has yielded ``mark`` items."""

    async def retrying(self) -> str:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:  # taken for one more failure to retry
                self.cancels += 1
        return "released"

    async def slow_cleanup(self) -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(3600)
        finally:
            await self.release.wait()  # a cleanup that takes its time

    async def streams_on(self) -> AsyncIterator[int]:
        n = 0
        while not self.release.is_set():
            try:
                self.yielded += 1
                if self.mark is not None and self.yielded >= self.mark:
                    self.passed_mark.set()
                yield n
                n += 1
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancels += 1


@pytest.fixture
async def stubborn() -> AsyncIterator[Stubborn]:
    code = Stubborn()
    # A failing test must not hang: the code lets go at the deadline (the test then says it was late).
    releasing = asyncio.get_running_loop().call_later(DEADLINE, code.release.set)
    yield code
    releasing.cancel()
    code.release.set()
    left = [t for t in asyncio.all_tasks() if t.get_name() == "task-run"]
    if left:
        await asyncio.wait(left, timeout=DEADLINE)


@pytest.mark.parametrize("target", ["retrying", "slow_cleanup", "streams_on"])
async def test_a_run_that_does_not_stop_still_times_out(stubborn: Stubborn, target: str) -> None:
    io = TaskIO()
    outcome = await execute(
        adapt(getattr(stubborn, target)),
        kwargs={},
        context=None,
        emit=io.emit,
        timeout=0.2,
        cancel_grace=GRACE,
    )
    assert not stubborn.release.is_set(), "the task ended only once its code let go"
    assert outcome.kind is FAILED
    assert outcome.error is not None and outcome.error.startswith("TimeoutError: timed out after 0.2 s")
    streamed = len(io.events)
    if target == "streams_on":
        stubborn.mark = stubborn.yielded + 3
        async with asyncio.timeout(DEADLINE):
            await stubborn.passed_mark.wait()  # the code left running goes on
    assert len(io.events) == streamed  # what it streams after its task ended is not the task's


async def test_a_run_that_does_not_stop_is_still_cancelled(stubborn: Stubborn) -> None:
    io = TaskIO()
    io.cancel()
    outcome: TaskOutcome = await execute(
        adapt(stubborn.retrying),
        kwargs={},
        context=None,
        emit=io.emit,
        inputs=io.inputs(),
        cancel_grace=GRACE,
    )
    assert not stubborn.release.is_set(), "the task ended only once its code let go"
    assert outcome.kind is CANCELLED
    assert stubborn.cancels >= 1


async def test_a_run_left_running_counts_towards_the_workers_replacement(stubborn: Stubborn) -> None:
    before = abandoned_runs()
    outcome = await execute(
        adapt(stubborn.retrying), kwargs={}, context=None, emit=TaskIO().emit, timeout=0.2, cancel_grace=GRACE
    )
    assert outcome.kind is FAILED
    assert abandoned_runs() == before + 1  # ReplaceCheck counts it, as an abandoned sync call
    stubborn.release.set()
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while abandoned_runs() != before:
        assert asyncio.get_running_loop().time() < deadline, "the run, let go, is still counted"
        await asyncio.sleep(0.01)


async def test_a_worker_with_too_many_runs_left_running_is_to_be_replaced(stubborn: Stubborn) -> None:
    check = ReplaceCheck(worker_spec("/", "m:f"))
    runs = [
        execute(
            adapt(stubborn.retrying),
            kwargs={},
            context=None,
            emit=TaskIO().emit,
            timeout=0.2,
            cancel_grace=GRACE,
        )
        for _ in range(ABANDONED_CALLS_LIMIT)
    ]
    await asyncio.gather(*runs)
    assert check.reason() is None  # as many as the limit: not past it
    await execute(
        adapt(stubborn.retrying), kwargs={}, context=None, emit=TaskIO().emit, timeout=0.2, cancel_grace=GRACE
    )
    reason = check.reason()
    assert reason is not None and reason.startswith(f"{ABANDONED_CALLS_LIMIT + 1} calls still run after")
