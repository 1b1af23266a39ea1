"""The broker's journal: SQLite (WAL, synchronous=NORMAL), group-committed on the event loop.

The tables and the SQL of each op are :mod:`.journal_tables`; the journal is the single
sequencer of seqs. Callers :meth:`Journal.submit` tuples; at the end of the loop
iteration everything submitted runs in ONE transaction (group commit) and the results of the whole
batch go to ``on_results``, in submission order. A read sees every write submitted before it.

Write-behind ops (``lease``, ``ready``, ``done``) have no result and only matter to a broker that
restarts: they do not start a commit of their own but ride along with the next op that has a result,
or go out ``write_behind`` seconds later at the latest. Losing them in a crash only means a message
is delivered again (at least once), never that an accepted message is lost; a settlement that comes
with a publish (``settled``, from ``ACKPUB``) commits with it. When a transaction fails (a full
disk), the write-behind ops of the batch are kept and tried again with the next commit (backing
off while commits keep failing), so the journal never forgets an ack that the broker applied;
so are the broker's own publishes (token None: a dead letter), or the ``done`` of a dead-lettered
message would commit without its copy in the dead-letter topic.

Retention: :meth:`Journal.prune` deletes settled work messages (kept a short while only to absorb
a resent duplicate) and, much later, stream messages (a task's inputs, read again by the worker of
a later attempt), a batch at a time; freed pages are reused, so the file stops growing at a steady
load.
It runs on the loop itself, not a thread: a batch takes tens of microseconds, less than the
hop to a thread and back, and one broker owns its file (see ``_take_ownership``). The WAL's
checkpoints, which sync the files, run on a thread of their own (``server/wal_checkpointer.py``):
while one holds commits back, ``idle`` stays False and what is submitted waits for the hold's end.

Ops (first item is the kind)::

    ("pub", token, topic, msg_id, key, headers, payload, is_work)
        -> ("pub", token, topic, seq, dup, msg_id, key, headers, payload)
    ("read", token, topic, from_seq, limit) -> ("read", token, topic, [(seq, msg_id, key,
        headers, payload)...])
    ("sync", token) -> ("sync", token)
    ("pass", token, topic, msg_id, key, headers, payload)   nothing written: a result handed
        -> the op itself                                     over unjournaled, answered in order
                                                             with the publishes before it
    ("lease", topic, seq, attempts, lease_id, owner, lease_until)   no result (write-behind)
    ("ready", topic, seq, attempts, failures, suspect, not_before)   no result (write-behind)
    ("done", topic, seq)                                             no result (write-behind); the
                                                                     message's payload is dropped
    ("settled", topic, seq)                                          as "done", but part of its
                                                                     batch: not kept on failure

If a transaction fails, every op of the batch that has a result answers ``("fail", token,
reason)`` instead.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from llamactl.server.errors import MessageQueueError
from llamactl.server.file_faults import advice, way_out
from llamactl.server.vanished_files import FileWatch
from llamactl.server.wal_checkpointer import Checkpointer, open_checkpointer

from .journal_tables import JournalTables, Op, PendingRow, Result, connect

__all__ = ["Journal", "PendingRow"]

log = logging.getLogger(__name__)

_MAX_BATCH = 8192
_WRITE_BEHIND = frozenset({"lease", "ready", "done"})
_WITH_RESULT = frozenset({"pub", "read", "sync", "pass"})
WRITE_BEHIND = 0.05
"""Seconds a write-behind op may wait for a commit that has to happen anyway."""
_RETRY_MAX = 2.0
"""Longest wait between tries of write-behind ops whose commit failed."""


class Journal:
    """SQLite journal, group-committed once per loop iteration (see the module docstring)."""

    def __init__(
        self,
        path: Path | None,
        on_results: Callable[[list[Result]], None],
        *,
        write_behind: float = WRITE_BEHIND,
    ) -> None:
        self._path = path
        self._pending: list[Op] = []
        self._flush_scheduled = False
        self._write_behind = write_behind
        self._deferred: asyncio.TimerHandle | None = None
        self._on_results = on_results
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None
        self._tables: JournalTables | None = None
        self.checkpointer: Checkpointer | None = None
        self._watch: FileWatch | None = None
        self._lock_fd: int | None = None
        self._lock_lost = False  # another broker took the lock after a deletion (said once)
        self._retry_delay = 0.0
        self.failed_commits = 0
        """Transactions that failed (a full disk, an I/O error), for health and tests."""
        self._prune_error: str | None = None
        """What the last prune failed with, said once until a prune succeeds again."""

    def _take_ownership(self) -> None:
        # A journal has exactly one broker: a second one (another `llamactl serve` of the same
        # folder) would hand out the same messages twice. flock ends with the process, so a
        # crashed owner never leaves a stale lock behind.
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._unusable(exc.strerror or str(exc), exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MessageQueueError(
                f"the message journal {self._path} is in use by another broker (is this deployment "
                "already served by another `llamactl serve`?): stop that one first"
            ) from None
        self._lock_fd = fd

    def _unusable(self, what: str, exc: BaseException) -> MessageQueueError:
        return MessageQueueError(
            f"cannot open the message journal {self._path}: {what} ({way_out(exc)}, or use another "
            "message queue: `message-queue: {type: redis, url: ...}`)"
        )

    def _release_ownership(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def open(self) -> list[PendingRow]:
        """Open (creating the schema) and return the pending work rows.

        Raises MessageQueueError if another broker holds the journal or its file cannot be made.
        """
        self._take_ownership()
        self._loop = asyncio.get_running_loop()
        try:
            pending = self._connect()
        except BaseException as exc:
            self._release_ownership()
            if isinstance(exc, sqlite3.Error | OSError):
                raise self._unusable(str(exc), exc) from exc
            raise
        if self.checkpointer is not None:
            self.checkpointer.start()
        return pending

    def _connect(self) -> list[PendingRow]:
        """Open the database and its checkpoint thread (not started); return the pending rows."""
        assert self._loop is not None
        db = connect(self._path)
        checkpointer: Checkpointer | None = None
        try:
            tables = JournalTables(db)
            pending = tables.pending()
            if self._path is not None:
                self._watch = FileWatch(str(self._path), "the message journal")
                checkpointer = open_checkpointer(
                    db,
                    str(self._path),
                    self._loop,
                    self._resume,
                    what=self._what,
                    watch=self._watch,
                    lost=self._lost,
                )
        except BaseException:
            db.close()
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            raise
        self._db, self._tables, self.checkpointer = db, tables, checkpointer
        return pending

    def _lost(self) -> None:
        """The checkpoint thread found the journal's file gone: write it back, open it again."""
        db, watch = self._db, self._watch
        if db is None or watch is None:
            return  # closed
        if watch.gone() is not None and not self._keep_ownership():
            return  # another broker has the folder now
        if not watch.restore(db, self._close_db):
            return
        try:
            self._connect()
        except (sqlite3.Error, OSError) as exc:  # what is submitted meanwhile waits (no database)
            log.error("%s cannot be opened again: %s%s", self._what, exc, _tip(exc))
            return
        if self.checkpointer is not None:
            self.checkpointer.start()

    def _close_db(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()  # ends any hold; its connection closes before ours
            self.checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = self._tables = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _keep_ownership(self) -> bool:
        """Take the lock again if its file went with the journal's; False (said once) if
        another broker took it meanwhile."""
        if self._lock_fd is None or self._path is None or not self._path.parent.parent.exists():
            return True  # nothing to lock, or nothing to write back (the deployment folder is gone)
        lock = f"{self._path}.lock"
        held = os.fstat(self._lock_fd)
        try:
            found = os.stat(lock)
            if (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino):
                return True
        except FileNotFoundError:
            pass
        old = self._lock_fd
        try:
            self._take_ownership()
        except MessageQueueError as exc:
            if not self._lock_lost:
                self._lock_lost = True
                log.error("%s: its files were deleted while the server ran, and %s", self._what, exc)
            self._lock_fd = old
            return False
        os.close(old)
        return True

    def _resume(self) -> None:
        """A checkpoint's hold ended: commit what waited for it."""
        if self._flush_scheduled and self._loop is not None:
            self._loop.call_soon(self._flush)

    @property
    def idle(self) -> bool:
        """True when no op that has a result waits for the next commit (so everything published
        before now has been answered)."""
        return not self._flush_scheduled

    def submit(self, op: Op, *, now: bool = False) -> None:
        """Queue ``op`` for the next commit; ``now``: a write-behind op that must not wait
        (it commits at the next loop iteration, and is still kept and retried on failure)."""
        self._pending.append(op)
        if self._flush_scheduled or self._loop is None:
            return
        if op[0] in _WRITE_BEHIND and not now:
            if self._deferred is None:
                self._deferred = self._loop.call_later(self._write_behind, self._flush)
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next one that succeeds."""
        return self._retry_delay == 0.0

    def _retry_later(self) -> None:
        """Try the kept write-behind ops again after a growing delay (commits are failing)."""
        assert self._loop is not None
        self._retry_delay = min(_RETRY_MAX, max(0.05, self._retry_delay * 2))
        if self._deferred is None and not self._flush_scheduled:
            self._deferred = self._loop.call_later(self._retry_delay, self._flush)

    def _flush(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        checkpointer = self.checkpointer
        if checkpointer is not None and checkpointer.holding:
            self._flush_scheduled = True  # not idle: the hold's end flushes what waits
            return
        self._flush_scheduled = False
        db = self._db
        if db is None:
            return
        failures = self.failed_commits
        # Only what was queued when the flush began: ops that ``on_results`` submits (leases of
        # the deliveries it makes, say) follow the usual rules, so a write-behind op does not
        # cost a second commit on the path of the result that caused it.
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), _MAX_BATCH):
            batch = pending[start : start + _MAX_BATCH]
            results = self._apply(db, batch)
            if results and results[0][0] == "fail" and any(map(_kept, batch)):
                # Kept in order ahead of anything submitted meanwhile, and tried again.
                self._pending[:0] = [op for op in batch if _kept(op)]
                self._retry_later()
            if results:
                self._on_results(results)
        if checkpointer is not None and pending and self.failed_commits == failures:
            checkpointer.committed()

    async def close(self) -> None:
        """Commit what is queued (one try), write the files back if they were deleted, then
        close the database and give up ownership."""
        checkpointer, self.checkpointer = self.checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()  # ends any hold; its connection closes before ours
        if self._db is not None:
            if self._deferred is not None:
                self._deferred.cancel()
                self._deferred = None
            pending, self._pending = self._pending, []
            for start in range(0, len(pending), _MAX_BATCH):
                self._apply(self._db, pending[start : start + _MAX_BATCH])
            watch = self._watch
            if watch is not None and watch.gone() is not None and self._keep_ownership():
                watch.restore(self._db, self._close_db)  # a stop right after a deletion
            self._close_db()
            self._release_ownership()

    def prune(self, settled_before: float, streams_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` settled work messages published before the wall time
        ``settled_before`` and stream messages published before ``streams_before``; return how
        many. Runs its own transactions."""
        if self.checkpointer is not None and self.checkpointer.holding:
            return 0  # commits wait for a checkpoint: prune at the next round
        if self._tables is None:
            return 0
        try:
            pruned = self._tables.prune(settled_before, streams_before, limit)
        except sqlite3.Error as exc:
            error = str(exc)
            if error != self._prune_error:  # every round (a few seconds) would flood the log
                self._prune_error = error
                log.warning("could not prune %s (%s)%s", self._what, exc, _tip(exc))
            return 0
        if self._prune_error is not None:
            self._prune_error = None
            log.warning("%s is pruned again", self._what)
        return pruned

    @property
    def _what(self) -> str:
        return "the message journal" if self._path is None else f"the message journal {self._path}"

    # -- database -----------------------------------------------------------------------------

    def _apply(self, db: sqlite3.Connection, ops: list[Op]) -> list[Result]:
        assert self._tables is not None
        apply, now = self._tables.apply, time.time()
        results: list[Result] = []
        try:
            db.execute("BEGIN")
            for op in ops:
                res = apply(op, now)
                if res is not None:
                    results.append(res)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.failed_commits += 1
            if self.failed_commits == 1 or self._retry_delay == 0:
                log.error("%s could not commit (%s)%s: retrying", self._what, exc, _tip(exc))
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._tables.forget_seqs()
            reason = f"journal error: {exc}"
            failed: list[Result] = [("fail", op[1], reason) for op in ops if op[0] in _WITH_RESULT]
            return failed or [("fail", None, reason)]
        if self._retry_delay:
            log.warning("the message journal commits again")
            self._retry_delay = 0.0
        return results


def _kept(op: Op) -> bool:
    """Whether ``op`` is tried again after its transaction failed: write-behind ops, and the
    broker's own publishes (a dead letter, whose message's ``done`` rides in the same batch),
    which nobody else would publish again."""
    return op[0] in _WRITE_BEHIND or (op[0] == "pub" and op[1] is None)


def _tip(exc: BaseException) -> str:
    """What to do about ``exc`` (a full disk, a damaged file), as a clause to append; or ""."""
    tip = advice(exc)
    return f": {tip}" if tip else ""
