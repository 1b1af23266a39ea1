"""The broker's journal: SQLite (WAL, synchronous=NORMAL) behind one writer thread.

Tables::

    msg  (topic, seq, msg_id, key, headers, payload)   every accepted publish; PK (topic, seq),
                                                       UNIQUE (topic, msg_id) absorbs duplicates
    work (topic, seq, attempts, lease_id, owner,       one row per work message not yet acked or
          lease_until, not_before)                     dead-lettered; leased iff lease_id is set

The writer thread is the single sequencer: it assigns ``seq = max + 1`` per topic inside the
transaction, so seqs are gap-free. Callers :meth:`Journal.submit` tuples; the thread takes
whatever is queued, runs it in ONE transaction (group commit) and hands the results of the
whole batch back to the event loop with one ``call_soon_threadsafe``, in submission order.
Reads run in the same thread, so a read sees every write submitted before it.

Ops (first item is the kind)::

    ("pub", token, topic, msg_id, key, headers, payload, is_work)
        -> ("pub", token, topic, seq, dup, msg_id, key, headers, payload)
    ("read", token, topic, from_seq, limit) -> ("read", token, topic, [(seq, msg_id, key,
        headers, payload)...])
    ("sync", token) -> ("sync", token)
    ("lease", topic, seq, attempts, lease_id, owner, lease_until)   no result (write-behind)
    ("ready", topic, seq, attempts, not_before)                      no result
    ("done", topic, seq)                                             no result

If a transaction fails, every op of the batch that has a result answers ``("fail", token,
reason)`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.errors import MessageQueueError

__all__ = ["Journal", "PendingRow"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS msg (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, msg_id TEXT NOT NULL, key TEXT NOT NULL,
    headers BLOB NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (topic, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS msg_by_id ON msg (topic, msg_id);
CREATE TABLE IF NOT EXISTS work (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    lease_id TEXT, owner BLOB, lease_until REAL, not_before REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, seq)) WITHOUT ROWID;
"""

Op = tuple[Any, ...]
Result = tuple[Any, ...]
# topic, seq, msg_id, key, headers, payload, attempts, lease_id, owner, lease_until, not_before
PendingRow = tuple[str, int, str, str, bytes, bytes, int, str | None, bytes | None, float | None, float]

_MAX_BATCH = 8192
_STOP: Op = ("stop",)


class Journal:
    """SQLite journal with a group-committing writer thread (see the module docstring)."""

    def __init__(self, path: Path | None, on_results: Callable[[list[Result]], None]) -> None:
        self._path = path
        self._on_results = on_results
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_seq: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    def _take_ownership(self) -> None:
        # A journal has exactly one broker: a second one (another `llamactl serve` of the same
        # folder) would hand out the same messages twice. flock ends with the process, so a
        # crashed owner never leaves a stale lock behind.
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MessageQueueError(
                f"the message journal {self._path} is in use by another broker (is this deployment "
                "already served by another `llamactl serve`?): stop that one first"
            ) from None
        self._lock_fd = fd

    def _release_ownership(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def open(self) -> list[PendingRow]:
        """Open (creating the schema), start the writer thread, return the pending work rows.

        Raises MessageQueueError if another broker holds the journal.
        """
        self._take_ownership()
        self._loop = asyncio.get_running_loop()
        started: asyncio.Future[list[PendingRow]] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="llamactl-mq-journal", daemon=True
        )
        self._thread.start()
        try:
            return await started
        except BaseException:
            self._release_ownership()
            raise

    def submit(self, op: Op) -> None:
        self._queue.put(op)

    async def close(self) -> None:
        """Commit what is queued, then stop the thread and close the database."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._release_ownership()

    # -- writer thread ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self._path is None else str(self._path)
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=True)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db

    def _recover(self, db: sqlite3.Connection) -> list[PendingRow]:
        rows = db.execute(
            "SELECT w.topic, w.seq, m.msg_id, m.key, m.headers, m.payload, w.attempts, w.lease_id,"
            " w.owner, w.lease_until, w.not_before FROM work w JOIN msg m USING (topic, seq)"
            " ORDER BY w.topic, w.seq"
        ).fetchall()
        return [tuple(r) for r in rows]

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self, started: asyncio.Future[list[PendingRow]]) -> None:
        try:
            db = self._connect()
            pending = self._recover(db)
        except Exception as exc:  # report to the opener, never die silently
            self._post(_set_exception, started, exc)
            return
        self._db = db
        self._post(_set_result, started, pending)
        q = self._queue
        try:
            while True:
                ops = [q.get()]
                while len(ops) < _MAX_BATCH:
                    try:
                        ops.append(q.get_nowait())
                    except queue.Empty:
                        break
                stop = ops[-1] is _STOP or any(op is _STOP for op in ops)
                batch = [op for op in ops if op is not _STOP]
                if batch:
                    results = self._apply(db, batch)
                    if results:
                        self._post(self._on_results, results)
                if stop:
                    return
        finally:
            db.close()

    def _apply(self, db: sqlite3.Connection, ops: list[Op]) -> list[Result]:
        results: list[Result] = []
        try:
            db.execute("BEGIN")
            for op in ops:
                res = self._one(db, op)
                if res is not None:
                    results.append(res)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.exception("journal transaction failed")
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._next_seq.clear()
            reason = f"journal error: {exc}"
            return [("fail", op[1], reason) for op in ops if op[0] in ("pub", "read", "sync")]
        return results

    def _one(self, db: sqlite3.Connection, op: Op) -> Result | None:
        kind = op[0]
        if kind == "pub":
            _, token, topic, msg_id, key, headers, payload, is_work = op
            seq = self._next_seq.get(topic)
            if seq is None:
                row = db.execute("SELECT MAX(seq) FROM msg WHERE topic = ?", (topic,)).fetchone()
                seq = 0 if row[0] is None else int(row[0]) + 1
            cur = db.execute(
                "INSERT OR IGNORE INTO msg (topic, seq, msg_id, key, headers, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (topic, seq, msg_id, key, headers, payload),
            )
            if cur.rowcount == 0:
                self._next_seq[topic] = seq
                old = db.execute(
                    "SELECT seq FROM msg WHERE topic = ? AND msg_id = ?", (topic, msg_id)
                ).fetchone()
                return ("pub", token, topic, int(old[0]), True, msg_id, key, headers, payload)
            self._next_seq[topic] = seq + 1
            if is_work:
                db.execute("INSERT INTO work (topic, seq) VALUES (?, ?)", (topic, seq))
            return ("pub", token, topic, seq, False, msg_id, key, headers, payload)
        if kind == "lease":
            _, topic, seq, attempts, lease_id, owner, until = op
            db.execute(
                "UPDATE work SET attempts = ?, lease_id = ?, owner = ?, lease_until = ?"
                " WHERE topic = ? AND seq = ?",
                (attempts, lease_id, owner, until, topic, seq),
            )
        elif kind == "ready":
            _, topic, seq, attempts, not_before = op
            db.execute(
                "UPDATE work SET attempts = ?, lease_id = NULL, owner = NULL, lease_until = NULL,"
                " not_before = ? WHERE topic = ? AND seq = ?",
                (attempts, not_before, topic, seq),
            )
        elif kind == "done":
            db.execute("DELETE FROM work WHERE topic = ? AND seq = ?", (op[1], op[2]))
        elif kind == "read":
            _, token, topic, from_seq, limit = op
            rows = db.execute(
                "SELECT seq, msg_id, key, headers, payload FROM msg WHERE topic = ? AND seq >= ?"
                " ORDER BY seq LIMIT ?",
                (topic, from_seq, limit),
            ).fetchall()
            return ("read", token, topic, rows)
        elif kind == "sync":
            return ("sync", op[1])
        return None


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
