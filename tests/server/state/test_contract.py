"""The StateStore contract, run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import asyncio
import time

import pytest

from llamactl.server.errors import StateStoreClosed, StateStoreError
from llamactl.server.state import LogEntry, StateStore, Versioned

from .conftest import MakeStore

# Generous bound for "returned promptly": far below the waits used, far above a slow CI hiccup.
PROMPT = 2.0


async def settle(store: StateStore) -> None:
    """Let tasks started before reach their first wait: yield to the loop, then two round trips
    through the store (backends that run calls elsewhere answer them in order)."""
    for _ in range(2):
        await asyncio.sleep(0)
        await store.log_length("__settle__")


# --- key/value ---------------------------------------------------------------------------------


async def test_get_missing(store: StateStore) -> None:
    assert await store.get("ns", "nope") is None


async def test_put_then_get(store: StateStore) -> None:
    assert await store.put("ns", "k", b"v1") == 1
    assert await store.get("ns", "k") == Versioned(b"v1", 1)


async def test_versions_grow_by_one(store: StateStore) -> None:
    versions = [await store.put("ns", "k", b"%d" % i) for i in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    assert await store.get("ns", "k") == Versioned(b"4", 5)


async def test_values_are_bytes_kept_exactly(store: StateStore) -> None:
    every_byte = bytes(range(256))
    await store.put("ns", "all", every_byte)
    await store.put("ns", "empty", b"")
    assert (await store.get("ns", "all")) == Versioned(every_byte, 1)
    assert (await store.get("ns", "empty")) == Versioned(b"", 1)
    assert await store.append("s", every_byte) == 0
    assert await store.read("s") == [LogEntry(0, every_byte)]


async def test_values_must_be_bytes(store: StateStore) -> None:
    with pytest.raises(TypeError):
        await store.put("ns", "k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.append("s", 5)  # type: ignore[arg-type]
    assert await store.get("ns", "k") is None
    assert await store.log_length("s") == 0


async def test_namespaces_are_isolated(store: StateStore) -> None:
    await store.put("a", "k", b"in a")
    assert await store.get("b", "k") is None
    await store.put("b", "k", b"in b")
    assert await store.get("a", "k") == Versioned(b"in a", 1)
    assert await store.get("b", "k") == Versioned(b"in b", 1)


async def test_cas_create_if_absent_succeeds_once(store: StateStore) -> None:
    assert await store.cas("ns", "k", b"first", None) == 1
    assert await store.cas("ns", "k", b"second", None) is None
    assert await store.get("ns", "k") == Versioned(b"first", 1)


async def test_cas_with_current_version_writes(store: StateStore) -> None:
    await store.put("ns", "k", b"v1")
    assert await store.cas("ns", "k", b"v2", 1) == 2
    assert await store.cas("ns", "k", b"v3", 2) == 3
    assert await store.get("ns", "k") == Versioned(b"v3", 3)


async def test_cas_with_stale_version_fails_and_writes_nothing(store: StateStore) -> None:
    await store.put("ns", "k", b"v1")
    await store.put("ns", "k", b"v2")
    assert await store.cas("ns", "k", b"stale", 1) is None
    assert await store.cas("ns", "k", b"future", 7) is None
    assert await store.get("ns", "k") == Versioned(b"v2", 2)


async def test_out_of_range_versions_never_match(store: StateStore) -> None:
    await store.put("ns", "k", b"v")
    assert await store.cas("ns", "k", b"x", 2**70) is None
    assert await store.delete("ns", "k", expected_version=-(2**70)) is False
    assert await store.get("ns", "k") == Versioned(b"v", 1)


async def test_cas_with_version_on_missing_key_fails(store: StateStore) -> None:
    assert await store.cas("ns", "k", b"v", 1) is None
    assert await store.get("ns", "k") is None


async def test_get_many_reads_the_keys_that_exist(store: StateStore) -> None:
    keys = [f"k{i:04d}" for i in range(600)]
    for key in keys[::3]:
        await store.put("ns", key, key.encode())
    await store.put("ns", "k0000", b"again")
    await store.put("other", "k0001", b"elsewhere")
    found = await store.get_many("ns", [*keys, "k0000"])
    assert sorted(found) == keys[::3]
    assert found["k0000"] == Versioned(b"again", 2) and found["k0003"] == Versioned(b"k0003", 1)
    assert await store.get_many("ns", []) == {} and await store.get_many("none", keys) == {}


async def test_delete_unconditional(store: StateStore) -> None:
    await store.put("ns", "k", b"v")
    assert await store.delete("ns", "k") is True
    assert await store.get("ns", "k") is None
    assert await store.delete("ns", "k") is False


async def test_delete_with_expected_version(store: StateStore) -> None:
    await store.put("ns", "k", b"v1")
    await store.put("ns", "k", b"v2")
    assert await store.delete("ns", "k", expected_version=1) is False
    assert await store.get("ns", "k") == Versioned(b"v2", 2)
    assert await store.delete("ns", "k", expected_version=2) is True
    assert await store.get("ns", "k") is None
    assert await store.delete("ns", "missing", expected_version=1) is False


async def test_recreated_key_starts_again_at_version_one(store: StateStore) -> None:
    await store.put("ns", "k", b"v1")
    await store.put("ns", "k", b"v2")
    await store.delete("ns", "k")
    assert await store.cas("ns", "k", b"again", None) == 1


async def test_list_in_key_order_with_prefix_after_and_limit(store: StateStore) -> None:
    for key in ["task/3", "task/1", "session/1", "task/2", "task/10", "tasks", "t"]:
        await store.put("ns", key, key.encode())
    await store.put("other", "task/0", b"elsewhere")

    listed = await store.list("ns", prefix="task/")
    assert [k for k, _ in listed] == ["task/1", "task/10", "task/2", "task/3"]
    assert listed[0] == ("task/1", Versioned(b"task/1", 1))
    assert [k for k, _ in await store.list("ns", prefix="task/", after="task/10")] == ["task/2", "task/3"]
    assert [k for k, _ in await store.list("ns", prefix="task/", limit=2)] == ["task/1", "task/10"]
    assert [k for k, _ in await store.list("ns")] == [
        "session/1",
        "t",
        "task/1",
        "task/10",
        "task/2",
        "task/3",
        "tasks",
    ]
    assert [k for k, _ in await store.list("ns", after="task/3")] == ["tasks"]
    assert await store.list("ns", prefix="nothing") == []
    assert await store.list("empty-ns") == []
    assert await store.list("ns", limit=0) == []


async def test_list_pages_through_everything(store: StateStore) -> None:
    keys = [f"k{i:03d}" for i in range(25)]
    for key in reversed(keys):
        await store.put("ns", key, b"")
    seen: list[str] = []
    after: str | None = None
    while page := await store.list("ns", after=after, limit=7):
        seen += [k for k, _ in page]
        after = page[-1][0]
    assert seen == keys


async def test_list_prefix_is_literal_and_case_sensitive(store: StateStore) -> None:
    for key in ["a%b", "a_b", "axb", "A_b", "a_B"]:
        await store.put("ns", key, b"")
    assert [k for k, _ in await store.list("ns", prefix="a_")] == ["a_B", "a_b"]
    assert [k for k, _ in await store.list("ns", prefix="a%")] == ["a%b"]


async def test_list_orders_non_ascii_keys_by_code_point(store: StateStore) -> None:
    keys = ["z", "é", "a", "\U0001f600", "\uffff", "ab"]
    for key in keys:
        await store.put("ns", key, b"")
    assert [k for k, _ in await store.list("ns")] == sorted(keys)
    assert [k for k, _ in await store.list("ns", prefix="\uffff")] == ["\uffff"]


async def test_list_reflects_deletes(store: StateStore) -> None:
    for key in "abc":
        await store.put("ns", key, b"")
    await store.delete("ns", "b")
    assert [k for k, _ in await store.list("ns")] == ["a", "c"]


# --- logs --------------------------------------------------------------------------------------


async def test_append_offsets_are_gap_free_from_zero(store: StateStore) -> None:
    offsets = [await store.append("s", b"%d" % i) for i in range(10)]
    assert offsets == list(range(10))
    assert await store.append("other", b"x") == 0
    assert await store.log_length("s") == 10


async def test_append_many_continues_the_offsets_in_order(store: StateStore) -> None:
    assert await store.append("s", b"first") == 0
    assert await store.append_many("s", [b"a", b"b", b"c"]) == [1, 2, 3]
    assert await store.append_many("s", []) == []
    assert await store.append("s", b"last") == 4
    assert [e.value for e in await store.read("s")] == [b"first", b"a", b"b", b"c", b"last"]
    assert await store.append_many("fresh", [b"x"]) == [0]


async def test_append_many_wakes_a_waiting_reader(store: StateStore) -> None:
    reader = asyncio.create_task(store.read("w", 0, wait=10.0))
    await asyncio.sleep(0)  # the reader is parked before the append
    await store.append_many("w", [b"1", b"2"])
    entries = await asyncio.wait_for(reader, 10.0)
    assert [e.value for e in entries] == [b"1", b"2"]


async def test_idem_key_returns_the_original_offset(store: StateStore) -> None:
    assert await store.append("s", b"a", idem_key="evt-1") == 0
    assert await store.append("s", b"b") == 1
    assert await store.append("s", b"a again", idem_key="evt-1") == 0
    assert await store.append("s", b"c", idem_key="evt-2") == 2
    assert await store.read("s") == [LogEntry(0, b"a"), LogEntry(1, b"b"), LogEntry(2, b"c")]
    # Idempotency keys belong to one stream.
    assert await store.append("t", b"a", idem_key="evt-1") == 0
    assert await store.log_length("t") == 1


async def test_find_idem_tells_whether_a_key_was_appended_without_appending(store: StateStore) -> None:
    assert await store.find_idem("s", "evt-1") is None
    await store.append("s", b"x")
    await store.append("s", b"a", idem_key="evt-1")
    assert await store.find_idem("s", "evt-1") == 1
    assert await store.find_idem("s", "evt-2") is None
    assert await store.find_idem("other", "evt-1") is None
    assert await store.log_length("s") == 2
    await store.delete_log("s")
    assert await store.find_idem("s", "evt-1") is None


async def test_read_from_offset_with_limit(store: StateStore) -> None:
    for i in range(10):
        await store.append("s", b"%d" % i)
    assert await store.read("s", 7) == [LogEntry(7, b"7"), LogEntry(8, b"8"), LogEntry(9, b"9")]
    assert await store.read("s", 2, limit=3) == [LogEntry(2, b"2"), LogEntry(3, b"3"), LogEntry(4, b"4")]
    assert await store.read("s", 10) == []
    assert await store.read("s", 0, limit=0) == []
    assert await store.read("unknown") == []
    assert len(await store.read("s")) == 10


async def test_log_length(store: StateStore) -> None:
    assert await store.log_length("s") == 0
    await store.append("s", b"a")
    await store.append("s", b"b", idem_key="x")
    await store.append("s", b"b", idem_key="x")
    assert await store.log_length("s") == 2


async def test_delete_log_removes_entries_and_idem_keys(store: StateStore) -> None:
    await store.append("s", b"a", idem_key="x")
    await store.append("s", b"b")
    await store.append("keep", b"k")
    await store.delete_log("s")
    assert await store.log_length("s") == 0
    assert await store.read("s") == []
    assert await store.append("s", b"new", idem_key="x") == 0
    assert await store.read("s") == [LogEntry(0, b"new")]
    assert await store.read("keep") == [LogEntry(0, b"k")]
    await store.delete_log("never-existed")


async def test_read_with_wait_returns_as_soon_as_an_entry_is_appended(store: StateStore) -> None:
    async with asyncio.timeout(10):
        reader = asyncio.create_task(store.read("s", 0, wait=10))
        await settle(store)
        assert not reader.done()
        started = time.monotonic()
        assert await store.append("s", b"hello") == 0
        entries = await reader
        assert time.monotonic() - started < PROMPT
        assert entries == [LogEntry(0, b"hello")]


async def test_read_with_wait_returns_existing_entries_at_once(store: StateStore) -> None:
    await store.append("s", b"there")
    async with asyncio.timeout(PROMPT):
        assert await store.read("s", 0, wait=30) == [LogEntry(0, b"there")]


async def test_read_with_wait_ignores_entries_before_from_offset(store: StateStore) -> None:
    await store.append("s", b"old")
    async with asyncio.timeout(10):
        reader = asyncio.create_task(store.read("s", 2, wait=10))
        await settle(store)
        await store.append("s", b"not yet")  # offset 1: below from_offset
        await settle(store)
        assert not reader.done()
        await store.append("s", b"this one")
        assert await reader == [LogEntry(2, b"this one")]


async def test_read_with_wait_wakes_every_waiter(store: StateStore) -> None:
    async with asyncio.timeout(10):
        readers = [asyncio.create_task(store.read("s", 0, wait=10)) for _ in range(5)]
        await settle(store)
        assert not any(r.done() for r in readers)
        await store.append("s", b"all")
        assert await asyncio.gather(*readers) == [[LogEntry(0, b"all")]] * 5


async def test_read_with_wait_and_nothing_appended_returns_empty_after_the_wait(store: StateStore) -> None:
    async with asyncio.timeout(10):
        started = time.monotonic()
        assert await store.read("s", 0, wait=0.2) == []
        elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < PROMPT


async def test_append_to_another_stream_does_not_end_the_wait(store: StateStore) -> None:
    async with asyncio.timeout(10):
        reader = asyncio.create_task(store.read("s", 0, wait=0.3))
        await settle(store)
        await store.append("other", b"x")
        assert await reader == []


async def test_concurrent_appends_get_each_offset_exactly_once(store: StateStore) -> None:
    async with asyncio.timeout(30):
        offsets = await asyncio.gather(*(store.append("s", b"%d" % i) for i in range(200)))
    assert sorted(offsets) == list(range(200))
    entries = await store.read("s", limit=1000)
    assert [e.offset for e in entries] == list(range(200))
    # Each task got the offset its own value landed at.
    assert {e.value: e.offset for e in entries} == {b"%d" % i: off for i, off in enumerate(offsets)}


async def test_concurrent_duplicate_appends_store_one_entry(store: StateStore) -> None:
    async with asyncio.timeout(30):
        offsets = await asyncio.gather(*(store.append("s", b"x", idem_key="same") for _ in range(50)))
    assert set(offsets) == {0}
    assert await store.log_length("s") == 1


async def test_concurrent_cas_increments_with_retries_are_not_lost(store: StateStore) -> None:
    await store.put("ns", "counter", b"0")

    async def increment() -> int:
        attempts = 0
        while True:
            attempts += 1
            current = await store.get("ns", "counter")
            assert current is not None
            await asyncio.sleep(0)  # let the other tasks interleave between read and write
            new = str(int(current.value) + 1).encode()
            if await store.cas("ns", "counter", new, current.version) is not None:
                return attempts

    async with asyncio.timeout(60):
        await asyncio.gather(*(increment() for _ in range(50)))
    assert await store.get("ns", "counter") == Versioned(b"50", 51)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_async_with_starts_and_closes(make_store: MakeStore) -> None:
    async with make_store() as store:
        await store.put("ns", "k", b"v")
        assert await store.get("ns", "k") == Versioned(b"v", 1)
    with pytest.raises(StateStoreClosed):
        await store.get("ns", "k")


async def test_use_before_start_raises(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(StateStoreError, match="start"):
        await store.get("ns", "k")


async def test_use_after_close_raises_state_store_closed(store: StateStore) -> None:
    await store.put("ns", "k", b"v")
    await store.close()
    await store.close()  # idempotent
    calls = [
        store.get("ns", "k"),
        store.put("ns", "k", b"v"),
        store.cas("ns", "k", b"v", None),
        store.delete("ns", "k"),
        store.list("ns"),
        store.append("s", b"v"),
        store.read("s"),
        store.read("s", wait=1),
        store.log_length("s"),
        store.delete_log("s"),
    ]
    for call in calls:
        with pytest.raises(StateStoreClosed):
            await call
    with pytest.raises(StateStoreClosed):
        await store.start()


async def test_close_wakes_waiting_readers(store: StateStore) -> None:
    async with asyncio.timeout(10):
        reader = asyncio.create_task(store.read("s", 0, wait=30))
        await settle(store)
        assert not reader.done()
        started = time.monotonic()
        await store.close()
        assert await reader == []
        assert time.monotonic() - started < PROMPT
