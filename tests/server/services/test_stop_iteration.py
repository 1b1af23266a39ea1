"""Sync user code that raises StopIteration (``next()`` on an empty iterator) fails its task.

asyncio refuses a StopIteration as a future's exception (``TypeError`` in the callback that
tries): the thread's outcome was then never delivered, and the task waited for ever."""

from __future__ import annotations

import asyncio

import pytest
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.execution import execute
from llamactl.server.services.threads import DaemonExecutor, run_in_daemon_thread

from .harness import DEADLINE, TaskIO

FAILED = WorkerMessageKind.TASK_FAILED


def first(items: list[int]) -> int:
    return next(iter(items))


class FirstOfNone(Workflow):
    @step
    def first(self, ev: StartEvent) -> StopEvent:  # a sync step: run in the loop's default executor
        return StopEvent(result=next(iter([])))


async def test_a_sync_call_that_raises_stop_iteration_raises_in_its_caller() -> None:
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(RuntimeError, match="StopIteration") as raised:
            await run_in_daemon_thread(first, [])
    assert isinstance(raised.value.__cause__, StopIteration)


async def test_the_daemon_executor_hands_a_stop_iteration_back_to_its_caller() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(RuntimeError, match="StopIteration"):
            await loop.run_in_executor(DaemonExecutor(), first, [])


async def test_a_sync_function_that_raises_stop_iteration_fails_its_task() -> None:
    io = TaskIO()
    async with asyncio.timeout(DEADLINE):
        outcome = await execute(adapt(first), kwargs={"items": []}, context=None, emit=io.emit)
    assert outcome.kind is FAILED
    assert outcome.error is not None and "StopIteration" in outcome.error


async def test_a_workflow_s_sync_step_that_raises_stop_iteration_fails_its_task() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(DaemonExecutor())  # as a worker's loop has (process.run_worker)
    io = TaskIO()
    async with asyncio.timeout(DEADLINE):
        outcome = await execute(adapt(FirstOfNone(timeout=None)), kwargs={}, context=None, emit=io.emit)
    assert outcome.kind is FAILED
    assert outcome.error is not None and "StopIteration" in outcome.error
