"""A result or an error holding text that UTF-8 cannot encode (a lone surrogate, as
``os.fsdecode`` makes of a file name that is not UTF-8) fails its task at once, once.

Before: the final report did not encode, the worker took that for the queue failing and gave the
delivery back, so the task ran again, and again, until its attempts ran out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llamactl.server.mq import topics
from llamactl.server.protocol import TaskMessage, WorkerMessage, WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.loader import load_target
from llamactl.server.services.worker import Worker

from .conftest import WriteModule
from .fake_mq import FakeQueue
from .harness import worker_spec

K = WorkerMessageKind
CONTROL = topics.control_topic("dep")
SERVICE = topics.service_topic("dep", "svc")
NAMES = """
NAME = b"caf\\xe9.txt".decode("utf-8", "surrogateescape")  # what os.fsdecode gives for it


async def name() -> str:
    return NAME


async def names() -> dict[str, int]:
    return {NAME: 1}


async def missing() -> None:
    raise FileNotFoundError(f"no such file: {NAME}")
"""

Serve = Callable[[str], FakeQueue]


@pytest.fixture
async def serving(source_dir: Path, write_module: WriteModule) -> AsyncIterator[Serve]:
    write_module("names.py", NAMES)
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def serve(path: str) -> FakeQueue:
        spec = worker_spec(source_dir, path)
        queue = FakeQueue()
        worker = Worker(spec, queue, adapt(load_target(source_dir, path)))
        started.append((worker, asyncio.create_task(worker.serve())))
        return queue

    yield serve
    for worker, task in started:
        worker.abort()
        await task


def reports(queue: FakeQueue) -> list[WorkerMessage]:
    return [WorkerMessage.model_validate_json(m.payload) for m in queue.topics.get(CONTROL, [])]


async def outcome(queue: FakeQueue) -> WorkerMessage:
    task = TaskMessage(task_id="t1", session_id="s1", service_id="svc", deployment="dep")
    await queue.publish(SERVICE, task.model_dump_json().encode(), msg_id="t1:start", key="s1")
    await queue.wait_for(lambda: bool(queue.deliveries) and queue.deliveries[0].state != "leased")
    assert queue.deliveries[0].state == "acked"  # not given back to run again
    (final,) = [m for m in reports(queue) if m.kind in (K.TASK_COMPLETED, K.TASK_FAILED)]
    return final


@pytest.mark.parametrize("path", ["names:name", "names:names"])
async def test_a_result_utf_8_cannot_encode_fails_its_task_once(serving: Serve, path: str) -> None:
    final = await outcome(serving(path))
    assert final.kind is K.TASK_FAILED
    assert final.error is not None and "surrogates not allowed" in final.error


async def test_an_error_utf_8_cannot_encode_fails_its_task_with_that_error(serving: Serve) -> None:
    final = await outcome(serving("names:missing"))
    assert final.kind is K.TASK_FAILED
    assert final.error == "FileNotFoundError: no such file: caf\\udce9.txt"
    assert final.traceback is not None and final.traceback.endswith(final.error)
