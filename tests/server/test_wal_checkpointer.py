"""The checkpointer's holds, without a writer: when a hold ends, and when it gives up."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from llamactl.server.wal_checkpointer import Checkpointer


def test_a_hold_ends_only_with_a_pass_that_began_after_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        resumed: list[bool] = []
        conn = sqlite3.connect(tmp_path / "db", check_same_thread=False)
        cp = Checkpointer(conn, str(tmp_path / "db"), loop, lambda: resumed.append(True), hold_frames=10)
        cp._passed(0, 50, 40, None)  # a pass reports a long WAL
        cp._started = 3
        cp.committed()
        assert cp.holding and cp.holds == 1
        cp._passed(3, 60, 60, None)  # began before the hold: it may have missed the last commit
        assert cp.holding and not resumed
        cp._passed(4, 60, 60, None)
        assert not cp.holding and resumed == [True] and cp.frames == 0
        conn.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("copied, error", [(30, None), (0, sqlite3.OperationalError("disk I/O error"))])
def test_a_pass_that_cannot_empty_the_wal_ends_the_hold_and_backs_off(
    tmp_path: Path, copied: int, error: BaseException | None
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        conn = sqlite3.connect(tmp_path / "db", check_same_thread=False)
        cp = Checkpointer(conn, str(tmp_path / "db"), loop, lambda: None, hold_frames=10, backoff=60.0)
        cp._passed(0, 50, 40, None)
        cp.committed()
        cp._passed(1, 60, copied, error)
        assert not cp.holding
        cp.committed()  # within the backoff: no new hold
        assert not cp.holding and cp.holds == 1
        conn.close()

    asyncio.run(scenario())


def test_a_wal_file_past_the_limit_holds_whatever_the_passes_said(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        conn = sqlite3.connect(tmp_path / "db", check_same_thread=False)
        cp = Checkpointer(
            conn, str(tmp_path / "db"), loop, lambda: None, hold_frames=10, limit_bytes=1000, size_every=0.0
        )
        cp._passed(0, 5, 5, None)  # the last pass saw a short WAL
        (tmp_path / "db-wal").write_bytes(b"\0" * 1000)
        cp.committed()
        assert not cp.holding
        (tmp_path / "db-wal").write_bytes(b"\0" * 1001)  # writes outran the passes
        cp.committed()
        assert cp.holding
        conn.close()

    asyncio.run(scenario())


def test_the_wal_file_size_is_looked_at_once_per_interval(tmp_path: Path) -> None:
    """Within ``size_every`` of a look that saw a short WAL file, a longer one waits for the next
    look (one ``stat`` per interval, not per commit); the next look after the interval holds."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        conn = sqlite3.connect(tmp_path / "db", check_same_thread=False)
        cp = Checkpointer(
            conn, str(tmp_path / "db"), loop, lambda: None, hold_frames=10, limit_bytes=1000, size_every=0.05
        )
        cp._passed(0, 5, 5, None)
        looked_again_at = loop.time() + 0.05
        cp.committed()  # looks: the WAL is short
        (tmp_path / "db-wal").write_bytes(b"\0" * 1001)
        cp.committed()
        assert not cp.holding  # not looked at yet
        async with asyncio.timeout(5):
            while not cp.holding:
                await asyncio.sleep(0.005)
                cp.committed()
        assert loop.time() >= looked_again_at
        conn.close()

    asyncio.run(scenario())


def test_past_half_the_limit_every_commit_looks(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        conn = sqlite3.connect(tmp_path / "db", check_same_thread=False)
        cp = Checkpointer(
            conn, str(tmp_path / "db"), loop, lambda: None, hold_frames=10, limit_bytes=1000, size_every=60.0
        )
        cp._passed(0, 5, 5, None)
        (tmp_path / "db-wal").write_bytes(b"\0" * 501)
        cp.committed()  # looks: past half, not past the limit
        assert not cp.holding
        (tmp_path / "db-wal").write_bytes(b"\0" * 1001)
        cp.committed()  # looks again at once, a minute before the interval would
        assert cp.holding
        conn.close()

    asyncio.run(scenario())
