"""A task's code that raises SystemExit or KeyboardInterrupt fails its task; the worker's loop
goes on (before, asyncio let either out of the loop, ending the worker and all it ran)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import Runnable, adapt
from llamactl.server.services.containment import running_task_code
from llamactl.server.services.execution import TaskOutcome, execute
from llamactl.server.services.loader import load_target

from .conftest import WriteModule
from .harness import TaskIO

LEAVERS = """
import asyncio
import sys

from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent


async def leave(how: str) -> str:
    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "exit-in-a-task-of-its-own":
        async def later() -> None:
            sys.exit(4)
        asyncio.get_running_loop().create_task(later())
        await asyncio.sleep(60)
    return "stayed"


def leave_from_a_thread() -> str:
    sys.exit(5)


async def leave_streaming():
    yield {"step": 1}
    raise KeyboardInterrupt


class Leaver(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        if ev.get("how") == "exit":
            sys.exit(6)
        return StopEvent(result="stayed")


leaver = Leaver(timeout=60)
"""


@pytest.fixture
def load(source_dir: Path, write_module: WriteModule) -> Any:
    write_module("leavers.py", LEAVERS)

    def load(path: str) -> Runnable:
        return adapt(load_target(source_dir, path), label=path)

    return load


async def run(runnable: Runnable, **kwargs: Any) -> TaskOutcome:
    io = TaskIO()
    return await execute(runnable, kwargs=kwargs, context=None, emit=io.emit, inputs=io.inputs())


@pytest.mark.parametrize(
    ("path", "kwargs", "exit_line"),
    [
        ("leavers:leave", {"how": "exit"}, "SystemExit: 3"),
        ("leavers:leave", {"how": "interrupt"}, "KeyboardInterrupt"),
        ("leavers:leave", {"how": "exit-in-a-task-of-its-own"}, "SystemExit: 4"),
        ("leavers:leave_from_a_thread", {}, "SystemExit: 5"),
        ("leavers:leave_streaming", {}, "KeyboardInterrupt"),
        ("leavers:leaver", {"how": "exit"}, "SystemExit: 6"),
    ],
)
async def test_an_exit_in_a_task_fails_it_and_the_loop_goes_on(
    load: Any, path: str, kwargs: dict[str, Any], exit_line: str
) -> None:
    runnable = load(path)
    outcome = await asyncio.wait_for(run(runnable, **kwargs), 30)  # the workflow's own timeout is 60 s
    assert outcome.kind is WorkerMessageKind.TASK_FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"ExitInTask: {exit_line}, raised by the task's code")
    assert "cannot stop its worker" in outcome.error
    again = load("leavers:leaver") if path == "leavers:leaver" else load("leavers:leave")
    after = await run(again, how="stay")
    assert (after.kind, after.result) == (WorkerMessageKind.TASK_COMPLETED, "stayed")


async def test_tasks_made_outside_a_task_s_run_are_left_as_they_are() -> None:
    """Only what a task's code makes is wrapped: the worker's own tasks keep their coroutine."""

    async def own() -> str:
        return "own"

    with running_task_code():
        inside = asyncio.get_running_loop().create_task(own())
    outside = asyncio.get_running_loop().create_task(own())
    assert inside.get_coro().__qualname__ != own.__qualname__  # type: ignore[union-attr]
    assert outside.get_coro().__qualname__ == own.__qualname__  # type: ignore[union-attr]
    assert await inside == await outside == "own"
