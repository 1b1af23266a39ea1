"""The SQLite store's one thread: it owns the connection and runs every operation, in batches.

Callers in the event loop put an ``Op`` on a queue and await its future. The thread takes
everything queued, runs it in one transaction (group commit: one COMMIT, so one WAL sync, for
the whole batch), then hands all results back to the loop with a single
``call_soon_threadsafe``. Futures resolve only after COMMIT, so an awaited write is durable (to
the degree ``synchronous`` promises). Measured in the design notes: a thread hop per call costs
more than a WAL/NORMAL commit, and group commit of 16 producers beats one commit per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamactl.server.errors import StateStoreDamaged, StateStoreError
from llamactl.server.file_faults import way_out
from llamactl.server.state import _sqlite_ops
from llamactl.server.state._sqlite_index import IndexedConnection
from llamactl.server.vanished_files import FileWatch
from llamactl.server.wal_checkpointer import Checkpointer, open_checkpointer

__all__ = ["MAX_BATCH", "Op", "Result", "Writer"]

log = logging.getLogger(__name__)

MAX_BATCH = 1000

# (future, value, error): what the loop applies after a batch.
Result = tuple["asyncio.Future[Any]", object, BaseException | None]
# (results, streams to wake, whether the batch held writes, what failed the whole batch if anything)
Deliver = Callable[[list[Result], set[str], bool, "sqlite3.Error | None"], None]


@dataclass(slots=True)
class Op:
    fn: Callable[..., object]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    write: bool
    wake: tuple[str, ...] = ()  # streams whose waiting readers the commit should wake


_STOP = object()


class Writer:
    """Owns the connection and the thread. ``start``/``stop`` report through loop futures."""

    def __init__(
        self,
        path: str,
        synchronous: str,
        busy_timeout_ms: int,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._loop = loop
        self._deliver = deliver
        self._queue: queue.SimpleQueue[Op | object] = queue.SimpleQueue()
        self.started: asyncio.Future[None] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.commits = 0  # write transactions committed (written on the thread, read anywhere)
        self._thread = threading.Thread(target=self._run, name=f"sqlite-state:{path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: Op) -> None:
        self._queue.put(op)

    def stop(self) -> None:
        """Ask the thread to finish what is queued, close the connection and exit."""
        self._queue.put(_STOP)

    def join(self) -> None:
        self._thread.join()

    # --- on the thread -------------------------------------------------------------------------

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        try:
            conn = _sqlite_ops.connect(self._path, self._synchronous, self._busy_timeout_ms)
        except BaseException as exc:
            self._post(_settle, self.started, None, exc)
            self._post(_settle, self.stopped, None, None)
            return
        self._post(_settle, self.started, None, None)
        try:
            stop = False
            while not stop:
                item = self._queue.get()
                batch: list[Op] = []
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, Op)
                    batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    try:
                        self._run_batch(conn, batch)
                    except Exception as exc:  # a bug here must not leave callers waiting forever
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        self._post(
                            self._deliver, [(op.future, None, exc) for op in batch], set(), False, None
                        )
        finally:
            conn.close()
            self._post(_settle, self.stopped, None, None)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Op]) -> None:
        """Run the batch in one transaction, first without savepoints; again with them, from a
        rolled-back start, when a write needed one (``_sqlite_ops.RedoWithSavepoints``)."""
        if not isinstance(conn, IndexedConnection):
            self._run_batch_once(conn, batch)
            return
        conn.savepoints = False
        try:
            self._run_batch_once(conn, batch)
        except _sqlite_ops.RedoWithSavepoints:
            _sqlite_ops.forget_after_rollback(conn)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.savepoints = True
            self._run_batch_once(conn, batch)
        finally:
            conn.savepoints = True

    def _run_batch_once(self, conn: sqlite3.Connection, batch: list[Op]) -> None:
        writes = any(op.write for op in batch)
        results: list[Result] = []
        try:
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            _sqlite_ops.check_log_heads(conn)  # with the write lock held: nobody appends after it
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._fail(batch, exc, "could not begin a transaction", writes)
            return
        failed: sqlite3.Error | None = None
        for op in batch:
            try:
                value = op.fn(conn, *op.args, **op.kwargs)
            except _sqlite_ops.RedoWithSavepoints:
                raise
            except sqlite3.Error as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error, ...):
                    # the earlier results of this batch are gone too.
                    failed = exc
                    break
                results.append((op.future, None, self._wrap(exc, f"{op.fn.__name__} failed")))
            except Exception as exc:
                results.append((op.future, None, exc))
            else:
                results.append((op.future, value, None))
        if failed is None:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                failed = exc
        if failed is not None:
            _sqlite_ops.forget_after_rollback(conn)  # fields given a column in this batch lost it again
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # report the first failure, not this one
                    conn.execute("ROLLBACK")
            self._fail(batch, failed, "the transaction failed", writes)
            return
        if writes:
            self.commits += 1
        streams = {stream for op in batch for stream in op.wake}
        self._post(self._deliver, results, streams, writes, None)

    def _fail(self, batch: list[Op], exc: sqlite3.Error, what: str, writes: bool) -> None:
        self._post(
            self._deliver, [(op.future, None, self._wrap(exc, what)) for op in batch], set(), writes, exc
        )

    def _wrap(self, exc: sqlite3.Error, what: str) -> StateStoreError:
        """A StateStoreError for ``exc``; StateStoreDamaged, naming the file and what to do,
        when SQLite found the file malformed."""
        err: StateStoreError
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            err = StateStoreDamaged(
                f"the SQLite state store {self._path} is damaged ({what}: {exc}): stop the server, "
                "then restore the file from a backup or move it aside to start with an empty one"
            )
        else:
            err = StateStoreError(f"SQLite state store: {what}: {exc}")
        err.__cause__ = exc
        return err


def _settle(fut: asyncio.Future[Any], value: object, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class InlineWriter(Writer):
    """Runs the same batches on the event loop's own thread: what the loop submitted during one
    iteration is committed in one transaction at the next, with no thread hop and no GIL hand-off.

    Each batch blocks the loop for as long as its transaction takes (tens of microseconds on WAL
    with ``synchronous=NORMAL``), so this suits a store that one process writes; with other
    processes writing the same file, a busy wait would block the loop: use the thread there.
    WAL checkpoints, which sync the files, run on a thread of their own (``server/wal_checkpointer.py``).
    """

    def __init__(
        self,
        path: str,
        synchronous: str,
        busy_timeout_ms: int,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
    ) -> None:
        super().__init__(path, synchronous, busy_timeout_ms, loop, deliver)
        self._pending: list[Op] = []
        self._scheduled = False
        self._conn: sqlite3.Connection | None = None
        self.checkpointer: Checkpointer | None = None
        self._watch: FileWatch | None = None

    def start(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            _settle(self.started, None, exc)
            _settle(self.stopped, None, None)
            return
        _settle(self.started, None, None)

    def _open(self) -> None:
        """Open the connection and, for a file, the checkpoint thread that also watches it."""
        conn = _sqlite_ops.connect(self._path, self._synchronous, self._busy_timeout_ms)
        try:
            if not _sqlite_ops.is_memory_path(self._path):
                self._watch = FileWatch(self._path, "the SQLite state store")
                checkpointer = open_checkpointer(
                    conn,
                    self._path,
                    self._loop,
                    self._schedule,
                    what=f"SQLite state store {self._path}",
                    synchronous=self._synchronous,
                    busy_timeout_ms=self._busy_timeout_ms,
                    watch=self._watch,
                    lost=self._lost,
                )
                checkpointer.start()
                self.checkpointer = checkpointer
        except BaseException:
            conn.close()
            self._close()
            raise
        self._conn = conn

    def _lost(self) -> None:
        """The checkpoint thread found the file gone: write it back and open it again."""
        conn, watch = self._conn, self._watch
        if conn is None or watch is None or not watch.restore(conn, self._close):
            return  # stopped, in place (written back already), or not to be written back
        try:
            self._open()
        except Exception as exc:  # what is queued meanwhile fails with "the state store is closed"
            log.error(
                "the SQLite state store %s cannot be opened again: %s (%s)", self._path, exc, way_out(exc)
            )

    def _close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()  # ends any hold, so that the next flush runs
            self.checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def submit(self, op: Op) -> None:
        self._pending.append(op)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._pending:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        conn = self._conn
        checkpointer = self.checkpointer
        if checkpointer is not None and checkpointer.holding:
            return  # the hold's end schedules the next flush
        commits = self.commits
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if conn is None:
                closed = StateStoreError("the state store is closed")
                self._deliver([(op.future, None, closed) for op in batch], set(), False, None)
                continue
            try:
                self._run_batch(conn, batch)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._deliver([(op.future, None, exc) for op in batch], set(), False, None)
        if checkpointer is not None and self.commits != commits:
            checkpointer.committed()

    def stop(self) -> None:
        checkpointer = self.checkpointer
        if checkpointer is not None:
            checkpointer.stop()  # ends any hold, so that the flush below runs
        self._flush()
        self.checkpointer = None
        if self._watch is not None and self._conn is not None:
            self._watch.restore(self._conn, self._close)  # a stop right after a deletion
        self._close()
        _settle(self.stopped, None, None)

    def join(self) -> None:
        return None

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        fn(*args)
