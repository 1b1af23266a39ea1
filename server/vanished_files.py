"""A SQLite file deleted while the server has it open (``git clean -fdx``, ``rm -rf .llamactl``),
noticed and written back under its name.

An unlinked file lives on while it is open: the server goes on serving from it, and at the next
start everything it held, and everything written since, is gone (the server finds no file and
makes an empty one). A store that one server writes from its event loop (the state store's
inline writer, the message journal) has a checkpoint thread: that thread looks at the file once
per :data:`WATCH_EVERY` with a :class:`FileWatch`, and when it is gone, the owner writes the
database back from its open connection with :func:`write_back` (SQLite's online backup, which
reads the committed WAL frames too) and opens it again. The owner also looks when it closes,
so a stop right after the deletion loses nothing.

A file that another process put in its place is left alone: it is someone else's now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from llamactl.server.file_faults import way_out

__all__ = ["WATCH_EVERY", "FileWatch", "WrittenBack", "write_back"]

log = logging.getLogger(__name__)

WATCH_EVERY = 1.0
"""Seconds between two looks at a store's files (one ``stat`` on the checkpoint thread)."""


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    """Whether the database file ``path``, as it was when the watch was made (after opening
    it), is still in place."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        """Names the file in log lines ("the state store", "the message journal")."""
        self._identity = _identity(path)
        # A descriptor of its own tells whether the file was deleted (no name left) or moved.
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._said: str | None = None  # the last problem logged, so that a retry says it once

    def close(self) -> None:
        """Let go of the file (the owner closed it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def changed(self) -> bool:
        """Whether the path no longer names the file (deleted, moved or replaced): one ``stat``."""
        return _identity(self.path) != self._identity

    def gone(self) -> str | None:
        """The database's path when its file was deleted and the owner should write it back;
        None while it is in place, when it was moved (it keeps another name), or when another
        file has taken its name (see :meth:`taken`).

        Its ``-wal`` and ``-shm`` files alone are not watched: the last connection's close
        copies the WAL into the database file through the descriptor it holds."""
        if _identity(self.path) is not None or self._fd is None:
            return None
        return self.path if os.fstat(self._fd).st_nlink == 0 else None

    def moved(self) -> bool:
        """Whether the file is no longer at its path but still has another name."""
        if self._fd is None or _identity(self.path) is not None:
            return False
        return os.fstat(self._fd).st_nlink > 0

    def taken(self) -> bool:
        """Whether another file now has the database's name (made by another process)."""
        found = _identity(self.path)
        return found is not None and found != self._identity

    def restore(self, conn: sqlite3.Connection, close: Callable[[], None]) -> bool:
        """If the file is gone, :func:`write_back` it from ``conn`` and log what happened; return
        whether ``close()`` was called (the owner then opens the file again). Says once that the
        file was taken by another process (nothing is written then) or that the copy failed
        (the owner keeps its connection, and the next look tries again)."""
        gone = self.gone()
        if gone is None:
            if self.moved():
                self._say(
                    logging.WARNING,
                    f"{self.what} {self.path} was moved while the server ran: the server goes on "
                    "with it where it is now, and a server started on this folder again will not "
                    "find it; stop this one and move it back first",
                )
            elif self.taken():
                self._say(
                    logging.ERROR,
                    f"{self.what} {self.path} was replaced by another file while this server ran "
                    "(another `llamactl serve` of this folder?): this server goes on with the file "
                    "it has open, and what it holds is lost when it stops; stop one of the servers",
                )
            return False
        closed = False

        def close_once() -> None:
            nonlocal closed
            closed = True
            close()

        try:
            done = write_back(conn, self, close_once)
        except _FolderGone as exc:
            self._say(
                logging.WARNING,
                f"{self.what} {self.path} was deleted with the folder {exc.folder} while the "
                "server ran: nothing is written back (that folder is not made again); what it "
                "holds is lost when the server stops",
            )
            return False
        except FileExistsError:
            self._say(
                logging.ERROR,
                f"{self.what} {self.path} was deleted while the server ran, and another process "
                f"made a new one before it could be written back: what this server held is in "
                f"{self.path}.saved-{os.getpid()}",
            )
            return True
        except (OSError, sqlite3.Error) as exc:
            self._say(
                logging.ERROR,
                f"{self.what}: {gone} was deleted while the server ran, and the database cannot "
                f"be written back ({exc}: {way_out(exc)}); trying again; until then, what it "
                "holds is lost if the server stops",
            )
            return closed
        self._said = None
        log.warning(
            "%s: %s was deleted while the server ran: written back from the open database (%s), "
            "nothing lost; leave %s alone while `llamactl serve` runs",
            self.what,
            gone,
            done.describe(),
            os.path.basename(os.path.dirname(self.path)) or "its folder",
        )
        return True

    def _say(self, level: int, message: str) -> None:
        if message != self._said:
            self._said = message
            log.log(level, "%s", message)


@dataclass(frozen=True, slots=True)
class WrittenBack:
    """What :func:`write_back` did, for the owner's log line."""

    size: int
    seconds: float

    def describe(self) -> str:
        return f"{self.size / 1024:,.0f} KiB in {self.seconds * 1000:,.0f} ms"


def write_back(conn: sqlite3.Connection, watch: FileWatch, close: Callable[[], None]) -> WrittenBack:
    """Copy the database that ``conn`` has open to ``watch.path``, whose file is gone.

    The copy is made under a temporary name beside it while ``conn`` is open; then ``close()``
    must close every connection the owner has on the old file (closing the last one removes the
    old WAL and shared-memory files by name, so it must happen before the copy takes the name);
    then the copy takes the name. The owner opens ``watch.path`` again afterwards.

    Raises ``OSError`` or ``sqlite3.Error`` if the copy cannot be made (a full disk, a folder
    that cannot be made again), before ``close()`` is called: the owner keeps its connection.
    Only the file's own folder is made again: when the one above it is gone too, nothing is
    written.
    Raises ``FileExistsError`` after ``close()`` if another process made a file of that name
    meanwhile; the copy is then kept as ``<path>.saved-<pid>``.
    """
    started = time.monotonic()
    path = watch.path
    temp = f"{path}.restoring-{os.getpid()}"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.mkdir(folder)  # `.llamactl` itself, not the deployment folder above it
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise _FolderGone(os.path.dirname(folder)) from None
    _remove(temp)
    target = sqlite3.connect(temp)
    try:
        conn.backup(target)
    except BaseException:
        target.close()
        _remove(temp)
        raise
    target.close()
    size = os.stat(temp).st_size
    close()
    try:
        os.link(temp, path)  # never over a file someone made meanwhile
        os.unlink(temp)
    except FileExistsError:
        os.replace(temp, f"{path}.saved-{os.getpid()}")
        raise
    return WrittenBack(size, time.monotonic() - started)


class _FolderGone(Exception):
    """The folder above the file's own folder is gone too (the deployment folder was deleted)."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.folder = folder


def _remove(path: str) -> None:
    for name in (path, f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
