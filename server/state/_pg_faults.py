"""How the PostgreSQL store reads a failed call: PostgreSQL out of reach, PostgreSQL refusing
for now (a condition of the server that passes: a full disk, a read-only standby, too many
connections), or a refused statement.

The first two are outages (:class:`~llamactl.server.outage.Reachability`): said once, shown by
``/status/``, and answered 503 (``unavailable``) so that clients wait and try again.
"""

from __future__ import annotations

import asyncio

import asyncpg

from llamactl.server.outage import STATE_REFUSING_WRITES

__all__ = ["RETRIED", "UNREACHABLE", "reason", "refused_for_now"]

RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
"""Aborted to break a conflict: the transaction is run again."""

UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
"""PostgreSQL did not answer, or is going away or coming back."""

_WHY_REFUSED: tuple[tuple[type[asyncpg.PostgresError], str, str], ...] = (
    (
        asyncpg.DiskFullError,
        STATE_REFUSING_WRITES,
        "its disk is full: free disk space on the database server",
    ),
    (
        asyncpg.ReadOnlySQLTransactionError,
        STATE_REFUSING_WRITES,
        "it is read-only (a standby, or a failover under way?)",
    ),
    (
        asyncpg.TooManyConnectionsError,
        "refusing connections",
        "it has too many connections: raise its max_connections or lower pool_size",
    ),
    (
        asyncpg.InsufficientResourcesError,
        "short of resources",
        "it is short of memory or of another resource",
    ),
)


def refused_for_now(exc: BaseException) -> tuple[str, str] | None:
    """``(state, why)`` when PostgreSQL refused for as long as a condition of the server lasts
    (the call is worth trying again later), else None."""
    for kind, state, why in _WHY_REFUSED:
        if isinstance(exc, kind):
            said = str(exc).split("\n", 1)[0]  # not its HINT line
            return state, f"{why}: {said}"
    return None


def reason(exc: BaseException) -> str:
    """Why PostgreSQL could not be reached, in one line."""
    return f"{type(exc).__name__}: {str(exc) or 'timed out'}"
