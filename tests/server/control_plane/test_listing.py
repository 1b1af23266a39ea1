"""Task listings on every state store: a status or a service alone is read through the
``svc_status`` index (the one field a task is indexed by besides its session) and merged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.types import TaskStatus
from tests.postgres import PostgresSchema
from tests.server.state.conftest import BACKENDS

D = "listing"
DONE, QUEUED, RUNNING = TaskStatus.COMPLETED, TaskStatus.QUEUED, TaskStatus.RUNNING
# (service, status) of tasks 0..11 in creation order: every service and status interleaved
LAYOUT = [("a", DONE), ("b", QUEUED), ("c", DONE), ("a", RUNNING), ("b", DONE), ("a", DONE)] * 2


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlPlaneRecords]:
    pg = PostgresSchema()
    store = BACKENDS[request.param](tmp_path, pg)
    await store.start()
    try:
        records = ControlPlaneRecords(store, D, ChangeFeed(store, D, f"{D}/changes"))
        tasks = [
            StoredTask(
                task_id=f"t{i:02d}",
                deployment=D,
                service_id=service,
                session_id="shared" if i % 2 else f"own{i}",
                own_session=not i % 2,
                status=status,
                created_at=1000.0 + i,
            )
            for i, (service, status) in enumerate(LAYOUT)
        ]
        await store.commit([records.task_write(t, None) for t in tasks])
        yield records
    finally:
        await store.close()
        await pg.drop()


async def _all_pages(records: ControlPlaneRecords, limit: int, **filters: object) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await records.list_tasks(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        seen += [t.task_id for t in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def _expected(service: str | None = None, status: TaskStatus | None = None) -> list[str]:
    return [
        f"t{i:02d}"
        for i, (svc, st) in enumerate(LAYOUT)
        if (service is None or svc == service) and (status is None or st is status)
    ]


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
async def test_a_status_alone_lists_every_service_in_creation_order(
    records: ControlPlaneRecords, limit: int
) -> None:
    assert await _all_pages(records, limit, status=DONE) == _expected(status=DONE)
    newest = await _all_pages(records, limit, status=DONE, descending=True)
    assert newest == _expected(status=DONE)[::-1]
    assert await _all_pages(records, limit, status=TaskStatus.FAILED) == []


@pytest.mark.parametrize("limit", [1, 3, 100])
async def test_a_service_alone_lists_every_status_in_creation_order(
    records: ControlPlaneRecords, limit: int
) -> None:
    assert await _all_pages(records, limit, service_id="a") == _expected(service="a")
    assert await _all_pages(records, limit, service_id="a", descending=True) == _expected(service="a")[::-1]
    assert await _all_pages(records, limit, service_id="nobody") == []


async def test_the_other_listings_and_counts_are_as_before(records: ControlPlaneRecords) -> None:
    assert await _all_pages(records, 5) == _expected()
    assert await _all_pages(records, 2, service_id="b", status=DONE) == _expected("b", DONE)
    assert await _all_pages(records, 2, session_id="shared") == [f"t{i:02d}" for i in range(1, 12, 2)]
    assert await records.count_tasks() == {
        "a": {"completed": 4, "running": 2},
        "b": {"queued": 2, "completed": 2},
        "c": {"completed": 2},
    }
    # status and service alone are not index fields any more: no entries, no counters per task
    assert await records.store.count(records.tasks_ns, "status") == {}
    assert await records.store.count(records.tasks_ns, "service") == {}
