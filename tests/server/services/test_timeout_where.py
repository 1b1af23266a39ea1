"""A task that times out says where its code was: the error names the innermost line of the
service's own code, the traceback holds the stack. Every adapter kind, run by execute()."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.execution import execute
from llamactl.server.services.loader import load_target

from .conftest import WriteModule
from .harness import WORKFLOWS, TaskIO

WORKFLOWS_1 = WORKFLOWS < (2, 0)

STUCK = """\
import asyncio
import threading
import time

from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

release = threading.Event()


async def fetch(url):
    await asyncio.sleep(3600)


async def async_function():
    await fetch("http://example")


def sync_function():
    release.wait(30)


async def async_generator():
    yield 1
    await fetch("http://example")


def sync_generator():
    yield 1
    release.wait(30)


class Middle(Event):
    pass


class TwoStuckSteps(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Middle:
        return Middle()

    @step
    async def waits(self, ev: Middle) -> StopEvent:
        await fetch("http://example")
        return StopEvent(result="never")

    @step
    def blocks(self, ev: Middle) -> StopEvent:
        release.wait(30)
        return StopEvent(result="never")


workflow = TwoStuckSteps(timeout=None)
"""


@pytest.mark.parametrize(
    ("target", "says", "innermost"),
    [
        ("async_function", "in fetch (stuck.py line 12)", "await asyncio.sleep(3600)"),
        ("sync_function", "in sync_function (stuck.py line 20)", "release.wait(30)"),
        ("async_generator", "in fetch (stuck.py line 12)", "await asyncio.sleep(3600)"),
        ("sync_generator", "in sync_generator (stuck.py line 30)", "release.wait(30)"),
        (
            "workflow",
            # workflows 1.x keeps no sync step in progress in its Context: those go unnamed there
            "in step waits (stuck.py line 12)"
            if WORKFLOWS_1
            else "in step blocks (stuck.py line 49), step waits (stuck.py line 12)",
            "await asyncio.sleep(3600)" if WORKFLOWS_1 else "release.wait(30)",
        ),
    ],
)
async def test_the_error_of_a_timed_out_task_names_where_its_code_was(
    source_dir: Path,
    write_module: WriteModule,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    says: str,
    innermost: str,
) -> None:
    """Before, every one of them said only "TimeoutError: timed out after 0.5 s"."""
    write_module("stuck.py", STUCK)
    monkeypatch.chdir(source_dir)  # a worker runs in its service's folder: paths are shown from it
    runnable: Any = adapt(load_target(source_dir, f"stuck:{target}"), label=target)
    try:
        io = TaskIO()
        outcome = await execute(runnable, kwargs={}, context=None, emit=io.emit, timeout=0.5)
    finally:
        load_target(source_dir, "stuck:release").set()  # type: ignore[attr-defined]
    assert outcome.kind is WorkerMessageKind.TASK_FAILED
    assert outcome.error == f"TimeoutError: timed out after 0.5 s, {says}"
    assert outcome.traceback is not None
    assert "here it was at the timeout (most recent call last):" in outcome.traceback
    assert re.search(rf'File "{re.escape(str(source_dir))}/stuck\.py", line \d+', outcome.traceback)
    assert innermost in outcome.traceback


@pytest.mark.parametrize(("target", "innermost"), [("async_function", 12), ("sync_function", 20)])
async def test_the_stack_ends_at_the_line_that_waits_not_in_the_library_s_ways_of_waiting(
    source_dir: Path, write_module: WriteModule, monkeypatch: pytest.MonkeyPatch, target: str, innermost: int
) -> None:
    """Below `await asyncio.sleep(3600)` it showed asyncio's `return await future`, and below
    `release.wait(30)` threading's `signaled = self._cond.wait(timeout)` and `waiter.acquire`."""
    write_module("stuck.py", STUCK)
    monkeypatch.chdir(source_dir)
    runnable: Any = adapt(load_target(source_dir, f"stuck:{target}"), label=target)
    try:
        outcome = await execute(runnable, kwargs={}, context=None, emit=TaskIO().emit, timeout=0.5)
    finally:
        load_target(source_dir, "stuck:release").set()  # type: ignore[attr-defined]
    assert outcome.traceback is not None
    stack = outcome.traceback.split("here it was at the timeout (most recent call last):\n", 1)[1]
    last = [line for line in stack.splitlines() if line.startswith("  File ")][-1]
    assert last.endswith(
        f'stuck.py", line {innermost}, in {"fetch" if target == "async_function" else target}'
    )
    assert "asyncio" + os.sep not in stack and "threading.py" not in stack, stack


async def test_a_task_that_ends_in_time_says_nothing_of_where(
    source_dir: Path, write_module: WriteModule
) -> None:
    write_module("quick.py", "async def quick():\n    return 1\n")
    io = TaskIO()
    runnable = adapt(load_target(source_dir, "quick:quick"), label="quick")
    outcome = await execute(runnable, kwargs={}, context=None, emit=io.emit, timeout=5)
    assert (outcome.kind, outcome.error, outcome.traceback) == (WorkerMessageKind.TASK_COMPLETED, None, None)
