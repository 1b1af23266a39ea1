"""What a user can do about a state file (the SQLite state store, the broker's journal) that
cannot be made or opened: the two engines say it alike."""

from __future__ import annotations

import errno
import sqlite3

__all__ = ["way_out"]


def way_out(exc: BaseException) -> str:
    """ "free some space on its disk" for a full disk, else "make its folder writable"."""
    full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if full or getattr(exc, "errno", None) == errno.ENOSPC:
        return "free some space on its disk"
    return "make its folder writable"
