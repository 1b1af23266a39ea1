"""A task handed out again to the worker still running its older attempt keeps the newer
attempt's timeout with the watchdog.

The watchdog's deadlines were kept by task id: the older attempt, stopped by the newer one,
took the newer one's deadline away as it ended, so the newer attempt blocking the loop past its
timeout was not interrupted (it ran on until the worker's end, past its lease)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamactl.server.mq import topics
from llamactl.server.protocol import TaskMessage, WorkerMessage, WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.loader import load_target
from llamactl.server.services.watchdog import LoopWatchdog
from llamactl.server.services.worker import Worker

from .conftest import WriteModule
from .fake_mq import FakeQueue
from .harness import worker_spec

K = WorkerMessageKind
CONTROL = topics.control_topic("dep")
SERVICE = topics.service_topic("dep", "svc")
CODE = """
import asyncio
import time

calls = 0


async def waits_then_blocks() -> str:
    global calls
    calls += 1
    if calls == 1:  # the attempt the worker was taken for dead in
        await asyncio.sleep(3600)
    await asyncio.sleep(0.2)  # the older attempt's stop is over by then
    end = time.monotonic() + 5
    while time.monotonic() < end:  # blocks the loop past the task's timeout
        time.sleep(0.01)
    return "blocked for 5 s"
"""


def reports(queue: FakeQueue) -> list[WorkerMessage]:
    return [WorkerMessage.model_validate_json(m.payload) for m in queue.topics.get(CONTROL, [])]


def final(queue: FakeQueue) -> WorkerMessage | None:
    ends = (K.TASK_COMPLETED, K.TASK_FAILED, K.TASK_CANCELLED)
    return next((m for m in reports(queue) if m.kind in ends), None)


@pytest.fixture
async def watchdog() -> AsyncIterator[LoopWatchdog]:
    exits: list[int] = []
    dog = LoopWatchdog(warn_after=0.2, exit_after=60.0, exit=exits.append)
    dog.start()
    yield dog
    dog.stop()
    assert exits == []


async def test_the_newer_attempt_keeps_its_timeout_with_the_watchdog(
    source_dir: Path, write_module: WriteModule, watchdog: LoopWatchdog
) -> None:
    write_module("blocks.py", CODE)
    path = "blocks:waits_then_blocks"
    spec = worker_spec(source_dir, path)
    queue = FakeQueue()
    worker = Worker(spec, queue, adapt(load_target(source_dir, path)), watchdog=watchdog)
    serving = asyncio.create_task(worker.serve())
    try:
        task = TaskMessage(task_id="t1", session_id="s1", service_id="svc", deployment="dep", timeout=0.5)
        await queue.publish(SERVICE, task.model_dump_json().encode(), msg_id="t1:start", key="s1")
        await queue.wait_for(lambda: bool(queue.deliveries))
        queue.redeliver(queue.deliveries[0])  # attempt 2, to the worker still running attempt 1
        await queue.wait_for(lambda: final(queue) is not None)
        report = final(queue)
        assert report is not None and report.attempt == 2
        assert report.kind is K.TASK_FAILED, f"ran on past its timeout: {report.kind} {report.result}"
        assert report.error is not None and "past a task's timeout of 0.5 s" in report.error
    finally:
        worker.abort()
        await serving
