"""The Context a session keeps after a task whose run was stopped (cancelled, timed out): its
state, for the session's next task to start from, not the stopped run itself to go on with."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.execution import TaskOutcome, execute
from llamactl.server.services.loader import load_target

from .conftest import WriteModule
from .harness import TaskIO

NAPPER = """
import asyncio

from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent


class Napper(Workflow):
    @step
    async def nap(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = await ctx.store.get("n", default=0) + 1
        await ctx.store.set("n", n)
        await asyncio.sleep(float(ev.get("seconds", 0)))
        return StopEvent(result={"n": n, "slept": ev.get("seconds", 0)})


napper = Napper(timeout=None)
"""


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
async def test_the_next_task_of_a_session_runs_its_own_input_after_a_stopped_one(
    source_dir: Path, write_module: WriteModule, stop: str
) -> None:
    write_module("napper.py", NAPPER)
    napper = adapt(load_target(source_dir, "napper:napper"))
    first = TaskIO()
    if stop == "cancel":
        asyncio.get_running_loop().call_later(0.3, first.cancel)
    stopped = await execute(
        napper,
        kwargs={"seconds": 3600},
        context=None,
        emit=first.emit,
        inputs=first.inputs(),
        timeout=0.3 if stop == "timeout" else None,
    )
    assert stopped.kind is not WorkerMessageKind.TASK_COMPLETED
    assert stopped.context is not None

    second = TaskIO()
    outcome: TaskOutcome = await execute(
        napper,
        kwargs={"seconds": 0},
        context=stopped.context,
        emit=second.emit,
        inputs=second.inputs(),
        timeout=3.0,
    )
    # Before, the stopped run went on instead (its step again, with its own input: an hour's
    # nap), and so did it in every later task of the session.
    assert (outcome.kind, outcome.error, outcome.result) == (
        WorkerMessageKind.TASK_COMPLETED,
        None,
        {"n": 2, "slept": 0},  # what the stopped run had stored is kept
    )
    assert second.types() == ["StopEvent"]
