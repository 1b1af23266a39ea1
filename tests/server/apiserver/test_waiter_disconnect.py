"""A client waiting on a task's ``/results`` that goes away takes its waiter with it.

The server runs in the test's event loop, so its waiters are seen where they live: the listeners
of the control plane's TaskSignals. (``tasks/run`` is not watched so: its waiter ends with the
task or the wait's bound, and a listener for the client's leaving would cost every run a task and
a loop turn.)
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio

from llamactl.server.control_plane.signals import TaskSignals
from tests.server.apiserver.conftest import OTHER_YML, Running, task_input

pytestmark = pytest.mark.asyncio(loop_scope="module")

D = "/deployments/lingering"


def waiters_of(task_id: str) -> int:
    """Listeners of ``task_id`` in every control plane of this process."""
    return sum(
        len(signals._listeners.get(task_id, ()))
        for signals in gc.get_objects()
        if isinstance(signals, TaskSignals)
    )


async def until(condition_met: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition_met():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="module")
async def lingering(client: httpx.AsyncClient, running: Running) -> AsyncIterator[str]:
    created = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        files={"config_file": ("upload", OTHER_YML.format(name="lingering", path="lingers:linger").encode())},
    )
    assert created.status_code == 200, created.text
    task_id = str(uuid.uuid4())
    made = await client.post(f"{D}/tasks/create", json={"input": task_input(seconds=120), "task_id": task_id})
    assert made.status_code == 200, made.text
    try:
        yield task_id
    finally:
        await client.post(f"{D}/tasks/{task_id}/cancel")
        await client.delete(D, timeout=60)


@pytest.mark.parametrize("query", [{"timeout": "600"}, {}])
async def test_a_results_waiter_ends_when_its_client_goes_away(
    client: httpx.AsyncClient, running: Running, lingering: str, query: dict[str, str]
) -> None:
    task_id = lingering
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as leaving:
        waiting = asyncio.create_task(leaving.get(f"{D}/tasks/{task_id}/results", params=query))
        await until(lambda: waiters_of(task_id) > 0, "the /results request never started waiting")
        waiting.cancel()  # the client gives up: its connection is closed
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await until(lambda: waiters_of(task_id) == 0, "the waiter outlived its client")
    record = await client.get(f"{D}/tasks/{task_id}")
    assert record.json()["status"] in ("queued", "running"), record.text  # the task went on
