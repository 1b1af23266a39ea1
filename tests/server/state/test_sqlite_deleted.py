"""The SQLite state store's files deleted under it (`rm -rf .llamactl`, `git clean -fdx`): written
back from the open database, so nothing it held, nor anything written since, is lost.

Before: the store went on writing to the unlinked file, and the next store opened on the path
found an empty one."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llamactl.server.state import SQLiteStateStore
from llamactl.server.state._sqlite_writer import InlineWriter
from llamactl.server.wal_checkpointer import Checkpointer
from tests.faults import small_disk

WRITTEN_BACK = "was deleted while the server ran: written back from the open database"


async def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _checkpointer(store: SQLiteStateStore) -> Checkpointer | None:
    writer = store._writer
    assert isinstance(writer, InlineWriter)
    return writer.checkpointer


async def _kept(path: Path, keys: list[str]) -> list[str]:
    """The keys of ``keys`` that a store opened afresh on ``path`` holds."""
    async with SQLiteStateStore(path) as store:
        return [key for key in keys if await store.get("ns", key) is not None]


def _said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_deleted_folder_is_written_back_while_the_store_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    folder = tmp_path / ".llamactl"
    path = folder / "state.sqlite"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "before", b"1")
        first = _checkpointer(store)
        shutil.rmtree(folder)
        await store.put("ns", "meanwhile", b"2")  # into the unlinked file
        await _until(lambda: _checkpointer(store) is not first, "the file written back")
        assert path.exists()
        await store.put("ns", "after", b"3")
        assert await store.get("ns", "before") is not None
    assert await _kept(path, ["before", "meanwhile", "after"]) == ["before", "meanwhile", "after"]
    said = _said(caplog, WRITTEN_BACK)
    assert len(said) == 1 and str(path) in said[0] and "leave .llamactl alone" in said[0], said


async def test_a_stop_right_after_the_deletion_writes_the_file_back(tmp_path: Path) -> None:
    folder = tmp_path / ".llamactl"
    path = folder / "state.sqlite"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "before", b"1")
        shutil.rmtree(folder)
        await store.put("ns", "meanwhile", b"2")
    assert await _kept(path, ["before", "meanwhile"]) == ["before", "meanwhile"]
    assert not list(folder.glob("*.restoring-*"))


async def test_a_file_another_process_put_in_its_place_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "state.sqlite"
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE theirs (x)")
    db.close()
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "ours", b"1")
        os.rename(other, path)  # atomically: the name is never free
        await _until(lambda: bool(_said(caplog, "was replaced by another file")), "the error")
        await store.put("ns", "still", b"2")  # the store serves on from its own file
        assert await store.get("ns", "ours") is not None
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    db.close()
    assert tables == ["theirs"]
    assert len(_said(caplog, "was replaced by another file")) == 1


async def test_a_write_back_that_fails_for_a_full_disk_is_said_once_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with small_disk(tmp_path / "disk", "8m") as disk:
        path = disk.path / ".llamactl" / "state.sqlite"
        async with SQLiteStateStore(path) as store:
            await store.put("ns", "before", b"1")
            first = _checkpointer(store)
            shutil.rmtree(path.parent)  # an open file's blocks stay taken: the copy needs more
            disk.fill()
            await _until(lambda: bool(_said(caplog, "cannot be written back")), "the error")
            assert _checkpointer(store) is first
            assert await store.get("ns", "before") is not None  # still served, from the open file
            failed = _said(caplog, "cannot be written back")
            assert "free some space on its disk" in failed[0], failed
            disk.free()
            await store.put("ns", "meanwhile", b"2")
            await _until(lambda: _checkpointer(store) is not first, "the file written back")
            assert len(_said(caplog, "cannot be written back")) == 1
        assert await _kept(path, ["before", "meanwhile"]) == ["before", "meanwhile"]


async def test_a_moved_file_is_said_once_and_not_copied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Moved (the folder renamed), the file keeps everything: the store goes on with it."""
    caplog.set_level(logging.WARNING)
    folder = tmp_path / ".llamactl"
    path = folder / "state.sqlite"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "before", b"1")
        folder.rename(tmp_path / "elsewhere")
        await _until(lambda: bool(_said(caplog, "was moved while the server ran")), "the warning")
        await store.put("ns", "meanwhile", b"2")
    assert not folder.exists()
    moved = tmp_path / "elsewhere" / "state.sqlite"
    assert await _kept(moved, ["before", "meanwhile"]) == ["before", "meanwhile"]
    assert len(_said(caplog, "was moved")) == 1


async def test_the_deployment_folder_deleted_is_not_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = tmp_path / "app"
    path = app / ".llamactl" / "state.sqlite"
    async with SQLiteStateStore(path) as store:
        await store.put("ns", "before", b"1")
        shutil.rmtree(app)
        await _until(lambda: bool(_said(caplog, "was deleted with the folder")), "the warning")
        await store.put("ns", "meanwhile", b"2")  # still served
    assert not app.exists()
    said = _said(caplog, "was deleted with the folder")
    assert len(said) == 1 and str(app) in said[0], said
