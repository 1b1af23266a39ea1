"""The StateStore contract's queries, counts, commits and log trimming, against every backend."""

from __future__ import annotations

import asyncio

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import LogEntry, StateStore, Versioned
from llamactl.server.state.base import Append, Cas, CommitResult, Delete, DeleteLog, Index, Put


def idx(sort: str, **fields: str) -> Index:
    return Index(sort=sort, fields=fields)


async def add_tasks(store: StateStore, statuses: dict[str, str]) -> None:
    for n, (key, status) in enumerate(statuses.items()):
        await store.cas("t", key, key.encode(), None, index=idx(f"{n:04d}:{key}", status=status, all=""))


async def test_query_finds_keys_by_field_value_in_sort_order(store: StateStore) -> None:
    await add_tasks(store, {"c": "done", "a": "queued", "b": "done", "d": "queued"})
    done = await store.query("t", "status", "done")
    assert [(k, v.value) for k, v, _ in done] == [("c", b"c"), ("b", b"b")]
    assert [k for k, _, _ in await store.query("t", "status", "queued")] == ["a", "d"]
    assert await store.query("t", "status", "nothing") == []
    assert await store.query("other", "status", "done") == []


async def test_query_without_a_value_lists_every_key_with_the_field(store: StateStore) -> None:
    await add_tasks(store, {"c": "done", "a": "queued", "b": "done"})
    assert [k for k, _, _ in await store.query("t", "all")] == ["c", "a", "b"]
    assert [k for k, _, _ in await store.query("t", "status")] == ["c", "a", "b"]
    assert [k for k, _, _ in await store.query("t", "all", descending=True)] == ["b", "a", "c"]


async def test_query_pages_with_the_last_sort_as_cursor_both_ways(store: StateStore) -> None:
    await add_tasks(store, {f"k{i}": "x" for i in range(7)})
    seen: list[str] = []
    after: str | None = None
    while page := await store.query("t", "status", "x", after=after, limit=3):
        seen += [k for k, _, _ in page]
        after = page[-1][2]
    assert seen == [f"k{i}" for i in range(7)]
    seen, after = [], None
    while page := await store.query("t", "all", after=after, limit=2, descending=True):
        seen += [k for k, _, _ in page]
        after = page[-1][2]
    assert seen == [f"k{i}" for i in reversed(range(7))]


async def test_query_returns_the_current_value_and_version(store: StateStore) -> None:
    await store.put("t", "k", b"v1", index=idx("1:k", status="queued"))
    await store.put("t", "k", b"v2")  # no index given: the fields stay as they were
    ((key, value, sort),) = await store.query("t", "status", "queued")
    assert (key, value, sort) == ("k", Versioned(b"v2", 2), "1:k")


async def test_rewriting_a_field_moves_the_key_and_keeps_the_other_fields(store: StateStore) -> None:
    await store.cas("t", "k", b"v", None, index=idx("1:k", status="queued", session="s1"))
    assert await store.cas("t", "k", b"v", 1, index=idx("1:k", status="done")) == 2
    assert await store.query("t", "status", "queued") == []
    assert [k for k, _, _ in await store.query("t", "status", "done")] == ["k"]
    assert [k for k, _, _ in await store.query("t", "session", "s1")] == ["k"]


async def test_an_update_without_a_sort_keeps_the_records_place(store: StateStore) -> None:
    await add_tasks(store, {"a": "queued", "b": "queued", "c": "queued"})
    moved = Index(sort=None, fields={"status": "done"})
    assert await store.cas("t", "b", b"b2", 1, index=moved) == 2
    assert await commit_ok(store, [Cas("t", "a", b"a2", 1, moved)])
    assert [(k, v.value) for k, v, _ in await store.query("t", "status", "done")] == [
        ("a", b"a2"),
        ("b", b"b2"),
    ]
    assert [k for k, _, _ in await store.query("t", "all")] == ["a", "b", "c"]  # sort kept
    assert [k for k, _, _ in await store.query("t", "status")] == ["a", "b", "c"]


async def commit_ok(store: StateStore, writes: list[Cas]) -> bool:
    return (await store.commit(writes)).ok


async def test_a_failed_cas_changes_no_index(store: StateStore) -> None:
    await store.cas("t", "k", b"v", None, index=idx("1:k", status="queued"))
    assert await store.cas("t", "k", b"v", 7, index=idx("1:k", status="done")) is None
    assert await store.count("t", "status") == {"queued": 1}


async def test_deleting_a_key_drops_it_from_queries_and_counts(store: StateStore) -> None:
    await add_tasks(store, {"a": "done", "b": "done"})
    assert await store.delete("t", "a")
    assert [k for k, _, _ in await store.query("t", "status", "done")] == ["b"]
    assert await store.count("t", "status") == {"done": 1}
    assert await store.delete("t", "b")
    assert await store.count("t", "status") == {}
    assert await store.query("t", "all") == []


async def test_count_follows_every_write(store: StateStore) -> None:
    await add_tasks(store, {"a": "queued", "b": "queued", "c": "running"})
    assert await store.count("t", "status") == {"queued": 2, "running": 1}
    await store.put("t", "a", b"a", index=idx("0000:a", status="completed"))
    assert await store.count("t", "status") == {"queued": 1, "running": 1, "completed": 1}
    assert await store.count("t", "all") == {"": 3}
    assert await store.count("t", "nothing") == {}
    assert await store.count("elsewhere", "status") == {}


async def test_commit_applies_every_write_and_reports_each_result(store: StateStore) -> None:
    await store.put("ns", "old", b"x")
    result = await store.commit(
        [
            Cas("ns", "new", b"n", None, idx("1:new", status="queued")),
            Put("ns", "old", b"y"),
            Append("log", b"e0"),
            Append("log", b"e1"),
            Delete("ns", "gone"),
        ]
    )
    assert result == CommitResult(ok=True, results=(1, 2, 0, 1, 0))
    assert await store.get("ns", "new") == Versioned(b"n", 1)
    assert await store.get("ns", "old") == Versioned(b"y", 2)
    assert await store.read("log") == [LogEntry(0, b"e0"), LogEntry(1, b"e1")]
    assert await store.count("ns", "status") == {"queued": 1}


@pytest.mark.parametrize(
    "failing",
    [Cas("ns", "k", b"z", 5), Cas("ns", "k", b"z", None), Delete("ns", "k", expected_version=9)],
    ids=["stale-cas", "create-existing", "delete-at-wrong-version"],
)
async def test_a_failed_condition_writes_nothing_at_all(store: StateStore, failing: Cas | Delete) -> None:
    await store.put("ns", "k", b"v", index=idx("1:k", status="queued"))
    result = await store.commit(
        [
            Put("ns", "k", b"changed", idx("1:k", status="done")),
            Append("log", b"entry"),
            Cas("ns", "fresh", b"f", None),
            failing,
            Append("log", b"after"),
        ]
    )
    assert result == CommitResult(ok=False, failed=3)
    assert await store.get("ns", "k") == Versioned(b"v", 1)
    assert await store.get("ns", "fresh") is None
    assert await store.log_length("log") == 0
    assert await store.count("ns", "status") == {"queued": 1}


async def test_commit_deletes_logs_with_the_records_or_not_at_all(store: StateStore) -> None:
    await store.put("ns", "k", b"v")
    for stream in ("events/a", "events/b"):
        await store.append(stream, b"e0", idem_key="i0")
        await store.append(stream, b"e1")
    refused = await store.commit([DeleteLog("events/a"), Delete("ns", "k", expected_version=7)])
    assert refused == CommitResult(ok=False, failed=1)
    assert await store.log_length("events/a") == 2
    done = await store.commit(
        [DeleteLog("events/a"), DeleteLog("events/b"), DeleteLog("none"), Delete("ns", "k")]
    )
    assert done == CommitResult(ok=True, results=(2, 2, 0, 1))
    assert await store.read("events/a") == [] and await store.get("ns", "k") is None
    assert await store.append("events/a", b"again", idem_key="i0") == 0  # its idempotency keys went too


async def test_commit_gives_each_delete_of_a_run_its_own_result(store: StateStore) -> None:
    """Pruning deletes hundreds of keys and logs in one commit (SQLite: one statement per run of
    them): each write still gets the result it would get alone, a key deleted twice too."""
    for key in ("a", "b", "c"):
        await store.put("ns", key, key.encode(), index=idx(f"1:{key}", status="done"))
    await store.put("other", "x", b"x")
    for stream in ("s", "t"):
        await store.append(stream, b"e0")
        await store.append(stream, b"e1")
    result = await store.commit(
        [
            DeleteLog("s"),
            DeleteLog("none"),
            DeleteLog("s"),
            DeleteLog("t"),
            Delete("ns", "a"),
            Delete("ns", "missing"),
            Delete("ns", "b"),
            Delete("ns", "a"),
            Delete("other", "x"),
            Delete("other", "y"),
            Delete("ns", "c", expected_version=1),
            Append("s", b"again"),
        ]
    )
    assert result == CommitResult(ok=True, results=(2, 0, 0, 2, 1, 0, 1, 0, 1, 0, 1, 0))
    assert await store.count("ns", "status") == {}
    assert [k for k, _ in await store.list("ns")] == [] and await store.get("other", "x") is None
    assert await store.read("s") == [LogEntry(0, b"again")] and await store.read("t") == []


async def test_a_run_of_deletes_is_undone_with_its_commit(store: StateStore) -> None:
    await store.put("ns", "a", b"a", index=idx("1:a", status="done"))
    await store.put("ns", "b", b"b")
    await store.append("s", b"e0")
    result = await store.commit(
        [DeleteLog("s"), DeleteLog("t"), Delete("ns", "a"), Delete("ns", "b"), Cas("ns", "k", b"z", 5)]
    )
    assert result == CommitResult(ok=False, failed=4)
    assert [k for k, _ in await store.list("ns")] == ["a", "b"]
    assert await store.count("ns", "status") == {"done": 1}
    assert await store.read("s") == [LogEntry(0, b"e0")]


async def test_a_commit_deletes_more_keys_than_one_statement_takes(store: StateStore) -> None:
    keys = [f"k{i:04d}" for i in range(1100)]
    await store.commit([Put("ns", key, b"v") for key in keys[::2]])
    await store.commit([Append(f"log/{key}", b"e") for key in keys[::2]])
    deleted = await store.commit(
        [DeleteLog(f"log/{key}") for key in keys] + [Delete("ns", key) for key in keys]
    )
    assert deleted.results == tuple([1, 0] * 550 * 2)
    assert await store.list("ns") == []
    assert await store.log_length("log/k0000") == 0


async def test_commit_sees_its_own_earlier_writes(store: StateStore) -> None:
    result = await store.commit([Cas("ns", "k", b"1", None), Cas("ns", "k", b"2", 1), Delete("ns", "k", 2)])
    assert result.ok and result.results == (1, 2, 1)
    assert await store.get("ns", "k") is None


async def test_commit_appends_are_idempotent_and_wake_readers(store: StateStore) -> None:
    waiting = asyncio.create_task(store.read("log", 0, wait=10))
    await asyncio.sleep(0.05)
    first = await store.commit([Append("log", b"a", idem_key="k1")])
    again = await store.commit([Append("log", b"a", idem_key="k1"), Append("log", b"b")])
    assert (first.results, again.results) == ((0,), (0, 1))
    assert (await asyncio.wait_for(waiting, 5))[0].value == b"a"


async def test_commit_of_many_appends_to_a_stream_keeps_each_one_s_key_and_order(store: StateStore) -> None:
    """A task's events stored in one commit (PostgreSQL: one call per run of appends to a
    stream): a key known before, or earlier in the same commit, gives its first offset."""
    await store.append("log", b"e0", idem_key="k0")
    writes = [
        Append("log", b"e0 again", idem_key="k0"),
        Append("log", b"e1", idem_key="k1"),
        Append("log", b"e2"),
        Append("log", b"e1 again", idem_key="k1"),
        Append("other", b"o0", idem_key="k1"),
        Append("log", b"e3", idem_key="k3"),
        DeleteLog("gone"),
        Append("log", b"e4", idem_key="k4"),
    ]
    result = await store.commit(writes)
    assert result == CommitResult(ok=True, results=(0, 1, 2, 1, 0, 3, 0, 4))
    assert [e.value for e in await store.read("log")] == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert await store.read("other") == [LogEntry(0, b"o0")]
    assert await store.find_idem("log", "k4") == 4
    assert await store.append("log", b"e5") == 5


async def test_commit_appends_numbered_at_commit_follow_the_commits_in_order(store: StateStore) -> None:
    """An Append ``at_commit`` (the change feed's) is numbered by the time its commit returns,
    after every entry committed before, in its commit's order; its result is its offset or -1."""
    await store.append("feed", b"c0")
    waiting = asyncio.create_task(store.read("feed", 1, wait=10))
    await asyncio.sleep(0.05)
    result = await store.commit(
        [Append("feed", b"c1", at_commit=True), Put("r", "k", b"v"), Append("feed", b"c2", at_commit=True)]
    )
    assert result.ok and result.results[1] == 1 and {result.results[0], result.results[2]} <= {-1, 1, 2}
    assert (await asyncio.wait_for(waiting, 5))[0] == LogEntry(1, b"c1")
    assert await store.append("feed", b"c3") == 3
    assert [e.value for e in await store.read("feed")] == [b"c0", b"c1", b"c2", b"c3"]
    with pytest.raises(ValueError, match="idempotency key"):
        Append("feed", b"x", idem_key="k", at_commit=True)


async def test_a_commit_whose_condition_fails_numbers_nothing_at_commit(store: StateStore) -> None:
    """A task's commits (its record and its change-feed entry: one statement on PostgreSQL)."""
    first = await store.commit([Cas("t", "k", b"v1", None), Append("feed", b"made", at_commit=True)])
    assert first.ok and first.results[0] == 1
    stale = await store.commit([Append("feed", b"lost", at_commit=True), Cas("t", "k", b"v2", 7)])
    assert stale == CommitResult(ok=False, failed=1)
    again = await store.commit([Cas("t", "k", b"v0", None), Append("feed", b"lost", at_commit=True)])
    assert again == CommitResult(ok=False, failed=0)
    kept = await store.commit(
        [Cas("t", "k", b"v2", 1, idx("1", status="done")), Append("feed", b"moved", at_commit=True)]
    )
    assert kept.ok and kept.results[0] == 2
    assert await store.get("t", "k") == Versioned(b"v2", 2)
    assert [e.value for e in await store.read("feed")] == [b"made", b"moved"]
    assert await store.count("t", "status") == {"done": 1}


async def test_trim_log_drops_the_front_and_offsets_go_on(store: StateStore) -> None:
    for i in range(5):
        await store.append("log", b"%d" % i, idem_key=f"i{i}")
    assert await store.trim_log("log", 3) == 3
    assert await store.read("log") == [LogEntry(3, b"3"), LogEntry(4, b"4")]
    assert await store.read("log", 1, limit=1) == [LogEntry(3, b"3")]
    assert await store.log_length("log") == 5
    assert await store.append("log", b"5") == 5
    assert await store.append("log", b"4", idem_key="i4") == 4


async def test_trim_log_keeps_the_last_entry_so_offsets_never_restart(store: StateStore) -> None:
    for i in range(3):
        await store.append("log", b"%d" % i)
    assert await store.trim_log("log", 100) == 2
    assert await store.read("log") == [LogEntry(2, b"2")]
    assert await store.append("log", b"3") == 3
    assert await store.trim_log("missing", 5) == 0


async def test_a_namespace_takes_at_most_four_indexed_fields(store: StateStore) -> None:
    await store.put("t", "k", b"v", index=idx("1:k", a="1", b="2", c="3", d="4"))
    with pytest.raises(StateStoreError, match="at most 4"):
        await store.put("t", "k2", b"v", index=idx("2:k2", e="5"))
    await store.put("other", "k", b"v", index=idx("1:k", e="5"))  # per namespace
    assert [k for k, _, _ in await store.query("t", "d", "4")] == ["k"]
