"""What the engines and the CLI advise for an OS error (a journal under `ulimit -n 20` said
"make its folder writable")."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from llamactl.server.file_faults import advice, way_out


def _error_of(number: int) -> OSError:
    return OSError(number, os.strerror(number), "/somewhere/state.sqlite")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (errno.ENOSPC, "free some space on its disk"),
        (errno.EMFILE, "raise the limit on open files"),
        (errno.ENFILE, "raise the limit on open files"),
        (errno.EROFS, "make its folder writable"),
        (errno.EACCES, "make its folder writable"),
    ],
)
def test_the_advice_follows_the_cause(number: int, expected: str) -> None:
    assert (advice(_error_of(number)) or "").startswith(expected)
    assert way_out(_error_of(number)).startswith(expected)


def test_a_cause_with_no_advice_gets_none_and_a_state_file_the_default() -> None:
    assert advice(_error_of(errno.EIO)) is None
    assert way_out(_error_of(errno.EIO)) == "make its folder writable"
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert advice(full) == "free some space on its disk"


def test_a_damaged_file_is_named_as_such_not_as_unwritable() -> None:
    """Opening garbage as a state store said "make its folder writable"; and an index found
    damaged (SQLITE_CORRUPT_INDEX, 779: Python gives SQLite's extended codes) had no advice."""
    for code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CORRUPT | (3 << 8)):
        damaged = sqlite3.DatabaseError("file is not a database")
        damaged.sqlite_errorcode = code
        assert way_out(damaged).startswith("it is damaged or not a SQLite file: restore it from a backup")
