"""How the PostgreSQL store reads a failed call (the store's behaviour on a real full disk is in
tests/e2e/faults/test_store_disk_full.py)."""

from __future__ import annotations

import asyncpg

from llamactl.server.outage import STATE_REFUSING_WRITES
from llamactl.server.state._pg_faults import UNREACHABLE, refused_for_now


def test_conditions_of_the_server_that_pass_are_refusals_for_now() -> None:
    full = asyncpg.DiskFullError(
        'could not extend file "base/1/2": No space left on device\nHINT:  Check free disk space.'
    )
    assert refused_for_now(full) == (
        STATE_REFUSING_WRITES,
        'its disk is full: free disk space on the database server: could not extend file "base/1/2": '
        "No space left on device",
    )
    standby = asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction")
    assert refused_for_now(standby) == (
        STATE_REFUSING_WRITES,
        "it is read-only (a standby, or a failover under way?): cannot execute INSERT in a read-only transaction",
    )
    crowded = asyncpg.TooManyConnectionsError("sorry, too many clients already")
    state, why = refused_for_now(crowded) or ("", "")
    assert state == "refusing connections" and "raise its max_connections or lower pool_size" in why
    assert refused_for_now(asyncpg.UniqueViolationError("duplicate key")) is None


def test_a_server_starting_up_or_shutting_down_is_out_of_reach() -> None:
    for exc in (
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    ):
        assert isinstance(exc, UNREACHABLE)
