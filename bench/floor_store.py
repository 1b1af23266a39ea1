"""The durable floor's store: the least a design writes that loses no task.

:class:`FloorStore` keeps one row per task in one SQLite file, tuned as llamactl's state store is
(WAL, ``synchronous=NORMAL``): the task before it is handed out, its result before the answer.
What the event loop submits during one iteration is committed in one transaction at the next
(group commit, run on the loop itself like llamactl's inline writer), and each write returns once
its transaction is committed. Nothing else: no index besides the key, no counters, no change
feed, no journal, no leases; SQLite's own automatic checkpoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from llamactl.server.ids import new_id

__all__ = ["FloorStore"]

_Params = tuple[object, ...]


class FloorStore:
    """Task rows in ``path``; :meth:`queued` and :meth:`finished` return once committed."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS task (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "input BLOB NOT NULL, result BLOB)"
        )
        self._pending: list[tuple[str, _Params, asyncio.Future[None]]] = []
        self._scheduled = False
        self.commits = 0

    async def queued(self, body: bytes) -> str:
        """Store a new task with its request body; return its id (time-ordered, as llamactl's: a
        new row goes to the key index's last page, not a random one)."""
        task_id = new_id()
        await self._write("INSERT INTO task (id, status, input) VALUES (?, 'queued', ?)", (task_id, body))
        return task_id

    async def finished(self, task_id: str, result: bytes) -> None:
        """Store the task's result."""
        await self._write("UPDATE task SET status = 'completed', result = ? WHERE id = ?", (result, task_id))

    def counts(self) -> dict[str, int]:
        """Tasks by status (for tests)."""
        rows = self._conn.execute("SELECT status, COUNT(*) FROM task GROUP BY status")
        return {str(status): int(n) for status, n in rows}

    def close(self) -> None:
        self._flush()
        self._conn.close()

    def _write(self, sql: str, params: _Params) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((sql, params, done))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return done

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params, _ in batch:
                self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        self.commits += 1
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)
