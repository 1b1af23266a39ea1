"""The disk under the deployment's PostgreSQL tables fills up (a real tmpfs as the tables'
tablespace): PostgreSQL answers reads but refuses writes that need a new page.

Meanwhile it is an outage of the store whose state is "refusing writes" (why, and what to do),
which `/status/` shows and a read answered does not end; a write refused is answered 503
(`unavailable`), and once space is freed everything is written again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until
from tests.faults import SmallDisk
from tests.postgres import PostgresSchema, full_disk_tablespace

from .conftest import Start

BIG = os.urandom(300_000).hex()  # an input stored out of line (TOAST), not compressible: new pages


@pytest.fixture
async def tablespace() -> AsyncIterator[tuple[SmallDisk, PostgresSchema, str]]:
    async with full_disk_tablespace() as made:
        yield made


async def test_a_full_disk_under_postgresql_is_an_outage_until_space_is_freed(
    tablespace: tuple[SmallDisk, PostgresSchema, str], start_app: Start
) -> None:
    disk, pg, name = tablespace
    deployment, _ = await start_app(
        {"work": {"path": "funcs:work"}, "measure": {"path": "funcs:measure"}},
        control_plane={"state_store_uri": f"{pg.uri}&default_tablespace={name}"},
    )
    cp = deployment.control_plane
    first = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "a", "seconds": 0}'))
    assert (await cp.wait_for_task(first.task_id, timeout=60)).status is TaskStatus.COMPLETED
    disk.fill()
    big = TaskDefinition(service_id="measure", input=f'{{"key": "b", "text": "{BIG}"}}')
    with pytest.raises(StateStoreError, match="refusing writes: its disk is full"):
        await cp.create_task(big)
    outage = deployment.store_outage
    assert outage is not None and outage.state == "refusing writes"
    assert "free disk space on the database server" in outage.error
    assert "state store" in outage.describe() and "refusing writes for" in outage.describe()
    assert (await cp.get_task(first.task_id)).status is TaskStatus.COMPLETED  # reads are answered
    assert deployment.store_outage is outage, "a read answered does not end it"
    disk.free()
    task = await cp.create_task(big)
    assert deployment.store_outage is None
    done = await cp.wait_for_task(task.task_id, timeout=60)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, f"b: {len(BIG)} characters")
    await wait_until(lambda: deployment.store_outage is None, 10)
