"""The durable floor's store: every write committed before it returns, one commit per loop turn."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bench.floor_store import FloorStore


async def test_writes_of_one_loop_turn_share_a_commit_and_are_on_disk_when_awaited(tmp_path: Path) -> None:
    store = FloorStore(tmp_path / "tasks.db")
    try:
        ids = await asyncio.gather(*(store.queued(f"task {n}".encode()) for n in range(10)))
        assert store.commits == 1
        assert len(set(ids)) == 10
        await store.finished(ids[0], b'"done"')
        assert store.commits == 2
        # another connection (another process would see the same) reads what was awaited
        other = sqlite3.connect(tmp_path / "tasks.db")
        rows = dict(other.execute("SELECT status, COUNT(*) FROM task GROUP BY status").fetchall())
        result = other.execute("SELECT result FROM task WHERE id = ?", (ids[0],)).fetchone()[0]
        other.close()
        assert rows == {"queued": 9, "completed": 1} == store.counts()
        assert result == b'"done"'
    finally:
        store.close()


async def test_a_failed_commit_fails_every_write_of_its_batch(tmp_path: Path) -> None:
    store = FloorStore(tmp_path / "tasks.db")
    lock = sqlite3.connect(tmp_path / "tasks.db", timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the file: the batch cannot begin
    try:
        store._conn.execute("PRAGMA busy_timeout = 0")
        results = await asyncio.gather(store.queued(b"a"), store.queued(b"b"), return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
        assert store.commits == 0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert await store.queued(b"c")  # the store goes on once the file is free
    assert store.counts() == {"queued": 1}
    store.close()


async def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    store = FloorStore(tmp_path / "tasks.db")
    pending = asyncio.ensure_future(store.queued(b"late"))
    await asyncio.sleep(0)  # the write is queued, its flush not run yet
    store.close()
    assert await pending
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 1
