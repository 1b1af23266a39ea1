"""The SQLite state store's WAL: checkpointed on a thread of its own, never in a commit, and
bounded under load, with a reader that pins it, on a full disk and at close."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from llamactl.server import wal_checkpointer as checkpointer_module
from llamactl.server.errors import StateStoreError
from llamactl.server.state import SQLiteStateStore
from llamactl.server.state._sqlite_writer import InlineWriter
from llamactl.server.wal_checkpointer import Checkpointer
from tests.faults import small_disk

SLACK = 2 * 1024 * 1024  # the batch that crossed the limit, and its neighbours
VALUE = b"x" * 6000  # two pages and more per record: the WAL grows fast


def _wal_bytes(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def _checkpointer(store: SQLiteStateStore) -> Checkpointer:
    writer = store._writer
    assert isinstance(writer, InlineWriter) and writer.checkpointer is not None
    return writer.checkpointer


async def _write(store: SQLiteStateStore, path: Path, records: int, *, clients: int = 16) -> int:
    """Write ``records`` new records from ``clients`` concurrent callers (so batches form, as
    under load); return the largest WAL file seen after any commit."""
    largest = 0

    async def client(n: int) -> None:
        nonlocal largest
        for i in range(n, records, clients):
            await store.put("ns", f"k{i:07d}", VALUE)
            largest = max(largest, _wal_bytes(path))

    await asyncio.gather(*(client(n) for n in range(clients)))
    return largest


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_checkpoints_run_on_their_thread_never_in_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStateStore(path) as store:
        cp = _checkpointer(store)
        writer = store._writer
        assert isinstance(writer, InlineWriter) and writer._conn is not None
        backstop = writer._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert backstop == checkpointer_module.BACKSTOP_FRAMES > checkpointer_module.HOLD_FRAMES
        await _write(store, path, 3000)
        await _until(
            lambda: cp.passes > 0 and os.path.getsize(path) > 3000 * 6000, "pages copied into the file"
        )
        assert cp.failures == 0


async def test_the_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStateStore(path) as store:
        largest = await _write(store, path, 8000)  # ~16,000 pages: 16x the hold threshold
        cp = _checkpointer(store)
        assert cp.holds >= 3, "the WAL never passed its bound"
        # Writing as fast as this outruns the passes: the WAL file's size bounds it.
        assert largest <= checkpointer_module.LIMIT_BYTES + SLACK, f"the WAL reached {largest} bytes"
        assert await store.get("ns", "k0007999") is not None
    assert _wal_bytes(path) == 0  # the last close checkpoints and removes the WAL


async def test_a_reader_that_pins_the_wal_does_not_stall_commits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "first", b"v")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM kv").fetchone()  # a snapshot: its frames stay
            started = time.monotonic()
            await _write(store, path, 3000)
            cp = _checkpointer(store)
            # Each hold ends at the first pass that cannot copy everything, then none for a second.
            assert cp.holds <= 2 + (time.monotonic() - started) / checkpointer_module.BACKOFF
            reader.execute("COMMIT")
        assert await store.get("ns", "k0002999") is not None


async def test_a_full_disk_fails_writes_but_never_hangs_them_and_the_wal_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        path = disk.path / "state.db"
        async with SQLiteStateStore(path) as store:
            await _write(store, path, 400)
            disk.fill()
            failed = 0
            for i in range(200):
                try:
                    await asyncio.wait_for(store.put("ns", f"full{i}", VALUE), 10)
                except StateStoreError:
                    failed += 1
            assert failed > 0, "the disk never filled"
            disk.free()
            largest = await _write(store, path, 2000)
            assert largest <= checkpointer_module.LIMIT_BYTES + SLACK
            assert await store.get("ns", "k0001999") is not None


async def test_close_ends_a_hold_and_commits_what_waits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    await store.start()
    await _write(store, path, 600)  # past the threshold once passes report it
    cp = _checkpointer(store)
    await _until(lambda: cp.frames > checkpointer_module.HOLD_FRAMES or cp.holds > 0, "a long WAL reported")
    cp._hold_timeout = 60.0  # only close may end this hold
    cp._wake.clear()
    cp.committed()
    pending = [asyncio.create_task(store.put("ns", f"late{i}", b"v")) for i in range(10)]
    await asyncio.sleep(0)
    await store.close()
    assert all(isinstance(v, int) for v in await asyncio.gather(*pending))
    async with SQLiteStateStore(path) as again:
        assert await again.get("ns", "late9") is not None
