"""What only the SQLite backend promises: persistence, WAL, group commit, files and sharing a file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import LogEntry, SQLiteStateStore, Versioned
from llamactl.server.state import _sqlite_ops as sqlite_ops
from llamactl.server.state.base import Append, Cas, Delete, DeleteLog, Put


def _pragma(path: Path, name: str) -> object:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sqlite-state:")]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "k", b"v1")
        await store.put("ns", "k", b"v2")
        await store.append("s", b"a", idem_key="evt-1")
        await store.append("s", b"b")

    async with SQLiteStateStore(path) as store:
        assert await store.get("ns", "k") == Versioned(b"v2", 2)
        assert await store.put("ns", "k", b"v3") == 3
        assert await store.read("s") == [LogEntry(0, b"a"), LogEntry(1, b"b")]
        assert await store.append("s", b"dup", idem_key="evt-1") == 0
        assert await store.append("s", b"c") == 2


async def test_creates_the_folder_and_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    async with SQLiteStateStore(path) as store:
        assert path.is_file()
        assert _pragma(path, "journal_mode") == "wal"
        assert store.path == str(path)
        assert store.synchronous == "NORMAL"


async def test_group_commit_groups_concurrent_writes(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        before = store.commit_count
        async with asyncio.timeout(30):
            versions = await asyncio.gather(*(store.put("ns", f"k{i}", b"v") for i in range(500)))
        commits = store.commit_count - before
        assert versions == [1] * 500
        assert 1 <= commits <= 50, f"500 concurrent puts took {commits} commits"
        assert len(await store.list("ns", limit=1000)) == 500


async def test_sequential_writes_commit_each_time(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        before = store.commit_count
        for i in range(5):
            await store.put("ns", "k", b"%d" % i)
        await store.get("ns", "k")  # reads commit nothing
        assert store.commit_count - before == 5


async def test_synchronous_full(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db", synchronous="FULL") as store:
        assert store.synchronous == "FULL"
        assert await store.put("ns", "k", b"v") == 1


def test_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError, match="NORMAL or FULL"):
        SQLiteStateStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(StateStoreError, match="busy_timeout"):
        SQLiteStateStore(tmp_path / "x.db", busy_timeout=-1)


async def test_the_inline_writer_starts_no_writer_thread(tmp_path: Path) -> None:
    before = set(_writer_threads())
    async with SQLiteStateStore(tmp_path / "state.db", writer="inline") as store:
        await store.put("ns", "k", b"v")
        assert set(_writer_threads()) - before == set()
    async with SQLiteStateStore(tmp_path / "state.db", writer="thread") as reopened:
        assert await reopened.get("ns", "k") == Versioned(b"v", 1)


async def test_in_memory_database(tmp_path: Path) -> None:
    async with SQLiteStateStore(":memory:") as store:
        await store.put("ns", "k", b"v")
        assert await store.append("s", b"a") == 0
        assert await store.get("ns", "k") == Versioned(b"v", 1)
    assert list(tmp_path.iterdir()) == []


async def test_close_joins_the_writer_thread(tmp_path: Path) -> None:
    before = set(_writer_threads())
    store = SQLiteStateStore(tmp_path / "state.db", writer="thread")
    await store.start()
    assert len(set(_writer_threads()) - before) == 1
    await store.close()
    assert set(_writer_threads()) - before == set()


async def test_close_finishes_operations_already_queued(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    await store.start()
    pending = [asyncio.create_task(store.append("s", b"%d" % i)) for i in range(100)]
    await asyncio.sleep(0)  # one loop turn: every task runs up to its first await (op queued)
    await store.close()
    assert sorted(await asyncio.gather(*pending)) == list(range(100))
    async with SQLiteStateStore(path) as again:
        assert await again.log_length("s") == 100


async def test_unopenable_file_raises_state_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    store = SQLiteStateStore(tmp_path / "a-file" / "state.db")
    with pytest.raises(StateStoreError, match="cannot open"):
        await store.start()
    assert _writer_threads() == [] or all(not t.is_alive() for t in _writer_threads())
    await store.close()


async def test_not_a_database_raises_state_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 300)
    store = SQLiteStateStore(path)
    with pytest.raises(StateStoreError):
        await store.start()
    await store.close()


async def test_two_stores_on_one_file_keep_offsets_gap_free(tmp_path: Path) -> None:
    """Stands in for two processes sharing the file: each has its own connection and thread."""
    path = tmp_path / "shared.db"
    async with SQLiteStateStore(path) as a, SQLiteStateStore(path) as b:
        async with asyncio.timeout(30):
            offsets = await asyncio.gather(*(store.append("s", b"x") for _ in range(100) for store in (a, b)))
        assert sorted(offsets) == list(range(200))
        assert await a.cas("ns", "k", b"a", None) == 1
        assert await b.cas("ns", "k", b"b", None) is None
        assert await b.get("ns", "k") == Versioned(b"a", 1)


async def test_two_stores_taking_turns_on_one_log_continue_each_others_offsets(tmp_path: Path) -> None:
    """Each store remembers a log's next offset only until the other one commits to the file: the
    other store appends in between."""
    path = tmp_path / "shared.db"
    async with SQLiteStateStore(path) as a, SQLiteStateStore(path) as b:
        offsets = [await store.append("s", b"a" if store is a else b"b") for store in (a, b, a, b, a)]
        assert offsets == [0, 1, 2, 3, 4]
        assert await a.append_many("s", [b"m", b"n"]) == [5, 6]
        assert await b.append("s", b"b") == 7
        assert [e.value for e in await b.read("s")] == [b"a", b"b", b"a", b"b", b"a", b"m", b"n", b"b"]


def _append_alone(conn: sqlite3.Connection, value: bytes) -> int:
    """One write transaction of one append, as the store's writer makes it."""
    conn.execute("BEGIN IMMEDIATE")
    sqlite_ops.check_log_heads(conn)
    off = sqlite_ops.append(conn, "s", value, None)
    conn.execute("COMMIT")
    return off


_APPEND_IN_ANOTHER_PROCESS = """
import sys
from llamactl.server.state import _sqlite_ops as o
c = o.connect(sys.argv[1], "NORMAL", 5000)
c.execute("BEGIN IMMEDIATE")
o.check_log_heads(c)
print(o.append(c, "s", b"theirs", None))
c.execute("COMMIT")
"""


def test_a_log_head_is_remembered_until_another_process_commits_to_the_file(tmp_path: Path) -> None:
    """Looking the next offset up (``MAX``) costs each append ~1.6x: a connection alone on its
    file does it once, and again only after another process committed."""
    path = str(tmp_path / "state.db")
    conn = sqlite_ops.connect(path, "NORMAL", 5000)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert [_append_alone(conn, b"ours") for _ in range(3)] == [0, 1, 2]
        assert sum("MAX(off)" in s for s in statements) == 1
        theirs = subprocess.run(
            [sys.executable, "-c", _APPEND_IN_ANOTHER_PROCESS, path],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert theirs.stdout.split() == ["3"]
        assert _append_alone(conn, b"ours") == 4  # looked up again: the other process appended
        assert sum("MAX(off)" in s for s in statements) == 2
    finally:
        conn.close()


def test_a_run_of_deletes_goes_as_one_statement(tmp_path: Path) -> None:
    """Pruning 200 tasks: their logs and their records are each one DELETE (it was one per write)."""
    conn = sqlite_ops.connect(str(tmp_path / "state.db"), "NORMAL", 5000)
    statements: list[str] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        keys = [f"t{i}" for i in range(200)]
        sqlite_ops.commit(conn, [Put("tasks", key, b"v") for key in keys])
        conn.set_trace_callback(statements.append)
        done = sqlite_ops.commit(
            conn, [DeleteLog(f"events/{k}") for k in keys] + [Delete("tasks", k) for k in keys]
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert done.results == tuple([0] * 200 + [1] * 200)
    # (each trigger run is traced again with its statement's text: count distinct texts)
    texts = {s for s in statements if s.startswith("DELETE")}
    assert sorted(t.split(" WHERE")[0] for t in texts) == ["DELETE FROM kv", "DELETE FROM log"]


async def test_an_append_rolled_back_inside_a_batch_leaves_no_gap(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        before = store.commit_count
        # One loop step, so one transaction: the failed commit's append is undone in the middle of
        # it, and the next append takes the offset it had.
        first, failed, after = await asyncio.gather(
            store.append("s", b"a"),
            store.commit([Append("s", b"lost"), Cas("ns", "k", b"v", expected_version=5)]),
            store.append("s", b"b"),
        )
        assert store.commit_count - before == 1
        assert (first, failed.ok, failed.failed, after) == (0, False, 1, 1)
        assert await store.read("s") == [LogEntry(0, b"a"), LogEntry(1, b"b")]
        assert await store.append("s", b"c") == 2


async def test_a_log_deleted_inside_a_batch_starts_again_at_zero(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        before = store.commit_count
        offsets = await asyncio.gather(
            store.append("s", b"a"), store.append("s", b"b"), store.delete_log("s"), store.append("s", b"c")
        )
        assert store.commit_count - before == 1
        assert offsets == [0, 1, None, 0]
        assert await store.read("s") == [LogEntry(0, b"c")]


async def test_waiting_reader_sees_other_writers_entries_when_the_wait_ends(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStateStore(path) as a, SQLiteStateStore(path) as b:
        async with asyncio.timeout(10):
            reader = asyncio.create_task(a.read("s", 0, wait=0.3))
            for _ in range(2):
                await asyncio.sleep(0)
                await a.log_length("other")
            await b.append("s", b"from b")
            assert await reader == [LogEntry(0, b"from b")]


async def test_waiters_do_not_leak(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        assert await store.read("s", wait=0.05) == []
        reader = asyncio.create_task(store.read("t", wait=10))
        for _ in range(2):
            await asyncio.sleep(0)
            await store.log_length("other")
        await store.append("t", b"x")
        await reader
        assert len(store._waiters) == 0


async def test_cancelled_caller_does_not_break_the_store(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        task = asyncio.create_task(store.put("ns", "k", b"v"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The write was queued before the cancel, so it still happens.
        assert await store.get("ns", "k") == Versioned(b"v", 1)


async def test_use_from_another_event_loop_is_refused(tmp_path: Path) -> None:
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                asyncio.run(store.get("ns", "k"))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_loop)
        thread.start()
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            await asyncio.to_thread(thread.join, 0.5)
        assert len(errors) == 1
        assert isinstance(errors[0], StateStoreError)
        assert "another event loop" in str(errors[0])


async def test_a_failing_operation_does_not_fail_the_rest_of_its_batch(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    async with SQLiteStateStore(tmp_path / "state.db") as store:
        # Queued in one loop step, so the writer most likely runs them in one transaction.
        first = store._submit(True, (), sqlite_ops.put, "ns", "a", b"1")
        bad = store._submit(True, (), broken)
        last = store._submit(True, ("s",), sqlite_ops.append, "s", b"x", None)
        assert await first == 1
        with pytest.raises(StateStoreError, match="no_such_table"):
            await bad
        assert await last == 0
        assert await store.get("ns", "a") == Versioned(b"1", 1)
        assert await store.log_length("s") == 1


async def test_a_batch_runs_without_savepoints_until_a_commit_fails_after_a_write(tmp_path: Path) -> None:
    """Savepoints cost two statements per commit: a batch runs without them, and again with them,
    from a rolled-back start, only when a commit failed after it had written something."""
    statements: list[str] = []
    async with SQLiteStateStore(tmp_path / "state.db", writer="inline") as store:
        await store.put("ns", "k", b"v")
        conn = store._writer._conn  # type: ignore[union-attr]
        assert conn is not None
        conn.set_trace_callback(statements.append)
        ok = await asyncio.gather(
            store.commit([Cas("ns", "a", b"1", None), Append("s", b"a")]),
            store.commit([Cas("ns", "k", b"w", 1), Append("s", b"k")]),
        )
        assert [r.ok for r in ok] == [True, True]
        assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]

        statements.clear()
        first, late, early, last = await asyncio.gather(
            store.commit([Cas("ns", "b", b"1", None), Append("s", b"b")]),
            store.commit([Cas("ns", "c", b"1", None), Append("s", b"lost"), Cas("ns", "k", b"x", 1)]),
            store.commit([Cas("ns", "k", b"y", 1), Append("s", b"early")]),  # fails first: nothing to undo
            store.commit([Cas("ns", "d", b"1", None), Append("s", b"d")]),
        )
        assert (first.ok, late.ok, late.failed, early.ok, early.failed, last.ok) == (
            True,
            False,
            2,
            False,
            0,
            True,
        )
        assert statements.count("ROLLBACK") == 1  # the late failure's redo, once for the batch
        assert any("SAVEPOINT" in s for s in statements)
    async with SQLiteStateStore(tmp_path / "state.db") as store:
        assert await store.get("ns", "c") is None
        assert await store.get("ns", "k") == Versioned(b"w", 2)
        assert [e.value for e in await store.read("s")] == [b"a", b"k", b"b", b"d"]
        assert {k for k, _ in await store.list("ns")} == {"a", "b", "d", "k"}
