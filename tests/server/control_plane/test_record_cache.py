"""The control plane's caches of task records and Contexts are bounded by bytes, not only by
count: a service whose results (or Contexts) are large must not fill the server's memory."""

from __future__ import annotations

import pytest

from llamactl.server.control_plane import contexts as contexts_module
from llamactl.server.control_plane import records as records_module
from llamactl.server.control_plane.record_cache import RecordCache
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import Deliveries, Harness


def test_the_oldest_entries_go_past_the_count() -> None:
    cache: RecordCache[int] = RecordCache(max_items=3, max_bytes=1000)
    for n in range(5):
        cache.put(f"k{n}", n, 10)
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k4") == 4
    assert cache.bytes == 30


def test_the_oldest_entries_go_past_the_bytes_and_the_sum_stays_exact() -> None:
    cache: RecordCache[str] = RecordCache(max_items=100, max_bytes=100)
    for n in range(6):
        cache.put(f"k{n}", "v", 20)
    assert cache.bytes == 100 and len(cache) == 5 and "k0" not in cache
    cache.put("k5", "bigger", 25)  # a key put again counts once, with its new size: 105, so k1 goes
    assert cache.bytes == 85 and len(cache) == 4 and "k1" not in cache and cache.get("k5") == "bigger"
    cache.pop("k5")
    cache.pop("k5")
    assert cache.bytes == 60 and len(cache) == 3


def test_an_entry_larger_than_a_quarter_of_the_budget_is_not_kept_and_drops_its_old_value() -> None:
    cache: RecordCache[str] = RecordCache(max_items=100, max_bytes=100)
    cache.put("k", "small", 10)
    cache.put("k", "huge", 26)
    assert "k" not in cache and cache.bytes == 0


async def test_large_results_and_contexts_do_not_stay_in_memory_beyond_the_budget(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records_module, "TASK_CACHE_BYTES", 8 << 20)
    monkeypatch.setattr(contexts_module, "CONTEXT_CACHE_BYTES", 8 << 20)
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    big = "x" * (1 << 20)
    ids = []
    for n in range(12):
        session = await plane.create_session()
        created = await plane.create_task(TaskDefinition(input="{}", session_id=session.session_id))
        delivery, task = await deliveries.take()
        await harness.finish(worker, task, f"{n}{big}", context={"state": f"{n}{big}"})
        await delivery.ack()
        assert (await plane.wait_for_task(created.task_id, timeout=10)).status is TaskStatus.COMPLETED
        ids.append(created.task_id)
    tasks_held, contexts_held = plane.records.cached
    print(f"counted: {tasks_held} task records and {contexts_held} Contexts of ~1 MB held after 12 tasks")
    assert tasks_held <= 8 and contexts_held <= 8
    for n, task_id in enumerate(ids):  # what left the cache is read from the store
        assert (await plane.get_task(task_id)).result == f"{n}{big}"
    result = await plane.task_result(ids[0])
    assert result is not None and result.result == f"0{big}"  # a string result goes out as it is
    await deliveries.aclose()
