"""WAL checkpoints on a thread of their own, for a SQLite file written from the event loop (the
state store's inline writer, the message journal), with a bound on the WAL.

SQLite checkpoints by itself inside the COMMIT that takes the WAL past 1,000 pages: it syncs the
WAL, copies its pages into the database file and syncs that. Written from the loop, all of it ran
on the loop: measured, about half of the function echo's sequential p99. Here a thread with a
connection of its own checkpoints, at most one pass per ``interval`` while commits come in, and
SQLite releases the GIL while it copies and syncs.

A pass that runs while the writer appends never copies the last frame, and SQLite starts the WAL
over only when a write transaction begins with every frame copied. So once a pass reports more
than ``hold_frames`` frames, the writer holds its next batches (the loop goes on serving; only
commits wait) until a pass that began after the hold has copied everything: the commit after it
starts the WAL over. The WAL stays within about ``hold_frames`` pages plus one pass's worth of
writes; when writes outrun the passes (a burst of large ones, a disk slow to sync), the WAL
file's size past :data:`LIMIT_BYTES` starts a hold too, which is the hard bound. A pass that
cannot copy everything (a reader in another connection still needs old frames), fails (a full
disk) or takes longer than ``hold_timeout`` ends the hold, and the next hold waits ``backoff``
seconds: commits never wait on a WAL that cannot start over.

The same thread looks at the files once a second, given a :class:`~.vanished_files.FileWatch`,
and tells the owner (``lost()``, on the loop) while the path no longer names the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from llamactl.server.vanished_files import WATCH_EVERY, FileWatch

__all__ = ["BACKSTOP_FRAMES", "HOLD_FRAMES", "LIMIT_BYTES", "Checkpointer", "open_checkpointer"]

log = logging.getLogger(__name__)

HOLD_FRAMES = 1000
"""WAL frames past which commits wait for a complete checkpoint (SQLite's own threshold)."""
LIMIT_BYTES = 16 * 1024 * 1024
"""The WAL file size past which commits wait for a complete checkpoint, whatever the passes said:
the hard bound when writes outrun the passes (a burst of large writes, a disk slow to sync)."""
_TRUNCATE_BYTES = 4 * 1024 * 1024  # what a WAL that started over is cut back to
BACKSTOP_FRAMES = 8 * HOLD_FRAMES
"""SQLite's own checkpoint in the commit stays on at this many frames, for a checkpoint thread
that keeps failing."""
INTERVAL = 0.1
"""Seconds between the starts of two passes, unless a hold waits for one. Each pass syncs both
files; under load the WAL starts over only through a hold anyway (a pass never catches a writer
that keeps appending), so passes between holds only shorten the hold's last one. Measured in
same-run pairs against 20 ms: under a third of the passes (4 s of the function echo: 198 -> 57
sequential, 161 -> 50 at 32 clients; holds 22 -> 18 and 4 -> 12), and the function and workflow
echo +4-6 % (medians of eight to ten pairs, sequential and 32 clients), the CPU step level;
250 ms made the sequential echo slower again (-6 %, three pairs of four); 5 ms cost more than it
saved."""
SIZE_EVERY = 0.005
"""Seconds between two looks at the WAL file's size while it is under half of the limit (a
``stat`` per commit was ~1.5 % of a sequential task's server CPU); past half, every commit looks,
so the limit holds as tightly as before unless 5 ms of commits add half of it."""
HOLD_TIMEOUT = 2.0
BACKOFF = 1.0


def open_checkpointer(
    writer: sqlite3.Connection,
    path: str,
    loop: asyncio.AbstractEventLoop,
    resume: Callable[[], None],
    *,
    what: str,
    synchronous: str = "NORMAL",
    busy_timeout_ms: int = 5000,
    watch: FileWatch | None = None,
    lost: Callable[[], None] | None = None,
) -> Checkpointer:
    """A :class:`Checkpointer` (not started) for the file ``path`` that ``writer`` writes on the
    loop: its own connection is opened here and ``writer`` is set up to leave it the work.
    With ``watch`` and ``lost``, ``lost()`` is called on the loop at each look that finds the
    file deleted, moved or replaced (see ``server/vanished_files.py``)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")  # how a pass syncs the files
        writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_FRAMES}")
        # A WAL that starts over is cut back to this size, so its file size tells how long it is.
        writer.execute(f"PRAGMA journal_size_limit = {_TRUNCATE_BYTES}")
    except BaseException:
        conn.close()
        raise
    return Checkpointer(conn, path, loop, resume, what=what, watch=watch, lost=lost)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class Checkpointer:
    """Checkpoints the WAL of ``conn``'s database, ``path``, on a thread (``conn`` is used there
    only).

    Made by :func:`open_checkpointer`. The writer asks :attr:`holding` before each batch, calls
    :meth:`committed` after a commit, and gets ``resume()`` called on the loop when a hold ends.
    ``what`` names the file in log lines.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        loop: asyncio.AbstractEventLoop,
        resume: Callable[[], None],
        *,
        what: str = "SQLite",
        hold_frames: int = HOLD_FRAMES,
        limit_bytes: int = LIMIT_BYTES,
        interval: float = INTERVAL,
        hold_timeout: float = HOLD_TIMEOUT,
        backoff: float = BACKOFF,
        size_every: float = SIZE_EVERY,
        watch: FileWatch | None = None,
        lost: Callable[[], None] | None = None,
        watch_every: float = WATCH_EVERY,
    ) -> None:
        self._conn = conn
        self.watch = watch
        """What the thread looks at once per ``watch_every`` (None: nothing)."""
        self._lost = lost
        self._watch_every = watch_every
        self._look_due = 0.0  # monotonic time of the next look (on the thread)
        self._wal = f"{path}-wal"
        self._limit_bytes = limit_bytes
        self._loop = loop
        self._resume = resume
        self._what = what
        self._hold_frames = hold_frames
        self._interval = interval
        self._hold_timeout = hold_timeout
        self._backoff = backoff
        self._size_every = size_every
        self._size_due = 0.0  # loop time of the next look at the WAL file's size
        self._size = 0  # what the last look saw
        self._wake = threading.Event()  # a commit came: a pass is due
        self._urgent = threading.Event()  # a hold waits: no pause before the next pass
        self._stopping = threading.Event()
        self._started = 0  # passes begun (written by the thread only)
        self._hold_from = 0  # the first pass that can end the hold
        self._hold_timer: asyncio.TimerHandle | None = None
        self._no_hold_until = 0.0
        self.holding = False
        """True while commits wait for a pass to copy the whole WAL."""
        self.frames = 0
        """WAL frames when the last pass ended (0 once the WAL started over)."""
        self.passes = 0
        self.holds = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End any hold, finish the pass that runs, close the connection and join the thread
        (or close the connection, if the thread never started)."""
        self._stopping.set()
        self._wake.set()
        self._urgent.set()
        if self._thread.ident is None:
            self._conn.close()
        else:
            self._thread.join()
        self._release()

    def committed(self) -> None:
        """The writer committed: a pass is due; hold the next commits if the WAL is long."""
        if not self._wake.is_set():
            self._wake.set()
        if self.holding:
            return
        now = self._loop.time()
        if now < self._no_hold_until:
            return
        if self.frames <= self._hold_frames:
            if now < self._size_due and self._size <= self._limit_bytes // 2:
                return
            self._size_due = now + self._size_every
            self._size = _size(self._wal)
            if self._size <= self._limit_bytes:
                return
        self.holding = True
        self.holds += 1
        self._hold_from = self._started + 1  # a pass begun after this commit sees every frame
        self._hold_timer = self._loop.call_later(self._hold_timeout, self._give_up)
        self._urgent.set()

    # --- on the loop ---------------------------------------------------------------------------

    def _passed(self, index: int, frames: int, copied: int, error: BaseException | None) -> None:
        self.passes += 1
        if error is not None:
            self.failures += 1
            self._give_up()
            return
        self.frames = frames
        if not self.holding or index < self._hold_from:
            return
        if copied < frames:  # a reader elsewhere still needs old frames: the WAL cannot start over
            self._give_up()
            return
        self.frames = 0  # the next commit starts the WAL over
        self._release()

    def _give_up(self) -> None:
        self._no_hold_until = self._loop.time() + self._backoff
        self._release()

    def _release(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self.holding:
            self.holding = False
            self._resume()

    # --- on the thread -------------------------------------------------------------------------

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        conn = self._conn
        failing = False
        every = self._watch_every if self.watch is not None and self._lost is not None else None
        try:
            while True:
                woke = self._wake.wait(every)
                if self._stopping.is_set():
                    return
                if every is not None:
                    self._look(every)
                if not woke:
                    continue
                self._wake.clear()
                self._started += 1
                index = self._started
                try:
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if not failing:  # once per streak, not once per pass
                        log.warning("%s: WAL checkpoints fail (retrying): %s", self._what, exc)
                    failing = True
                    self._post(self._passed, index, 0, 0, exc)
                    self._stopping.wait(self._backoff)
                    continue
                if failing:
                    log.info("%s: WAL checkpoints work again", self._what)
                    failing = False
                # -1, -1 would mean not in WAL mode, which a file store always is
                self._post(self._passed, index, max(int(frames), 0), max(int(copied), 0), None)
                if self._urgent.wait(self._interval):  # at most a pass per interval, unless held
                    self._urgent.clear()
        finally:
            conn.close()

    def _look(self, every: float) -> None:
        now = time.monotonic()
        if now < self._look_due:
            return
        self._look_due = now + every
        watch, lost = self.watch, self._lost
        assert watch is not None and lost is not None
        if watch.changed():
            self._post(lost)
