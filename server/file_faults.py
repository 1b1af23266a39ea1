"""What a user can do about an OS error: a state file (the SQLite state store, the broker's
journal) that cannot be made or opened, or anything else the server could not open. The engines
and the CLI say it alike."""

from __future__ import annotations

import errno
import sqlite3

__all__ = ["advice", "way_out"]

_OPEN_FILES = "raise the limit on open files (`ulimit -n 4096`, `LimitNOFILE=` in a systemd unit)"


def advice(exc: BaseException) -> str | None:
    """What to do about ``exc`` when its cause is a full disk, too many open files, or a
    permission; else None."""
    number = getattr(exc, "errno", None)
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or number == errno.ENOSPC:
        return "free some space on its disk"
    if number in (errno.EMFILE, errno.ENFILE):
        return _OPEN_FILES
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make its folder writable"
    return None


def way_out(exc: BaseException) -> str:
    """:func:`advice` for a state file that cannot be made or opened: by default "make its
    folder writable"."""
    return advice(exc) or "make its folder writable"
