"""What a user can do about an OS error: a state file (the SQLite state store, the broker's
journal) that cannot be made or opened, or anything else the server could not open. The engines
and the CLI say it alike."""

from __future__ import annotations

import errno
import sqlite3

__all__ = ["advice", "is_disk_full", "way_out"]

_OPEN_FILES = "raise the limit on open files (`ulimit -n 4096`, `LimitNOFILE=` in a systemd unit)"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, a sqlite3 error) says the disk is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return getattr(exc, "errno", None) == errno.ENOSPC


def advice(exc: BaseException) -> str | None:
    """What to do about ``exc`` when its cause is a full disk, a damaged file, too many open
    files, or a permission; else None."""
    number = getattr(exc, "errno", None)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        code &= 0xFF  # Python reports SQLite's extended codes: SQLITE_CORRUPT_INDEX is 779
    if is_disk_full(exc):
        return "free some space on its disk"
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return (
            "it is damaged or not a SQLite file: restore it from a backup or move it aside to start "
            "with an empty one, losing what it held"
        )
    if number in (errno.EMFILE, errno.ENFILE):
        return _OPEN_FILES
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make its folder writable"
    return None


def way_out(exc: BaseException) -> str:
    """:func:`advice` for a state file that cannot be made or opened: by default "make its
    folder writable"."""
    return advice(exc) or "make its folder writable"
