"""``postgresql://...``: the state store in a PostgreSQL database, shared by several servers.

For deployments that outgrow one machine: every ``llamactl serve`` (and every control plane) that
names the same database and schema sees the same sessions, tasks and event logs.

* A pool of connections (asyncpg); each call takes one for one statement, or one transaction.
* Offsets are gap-free and idempotency keys hold across processes: an append locks its stream's
  head row (see ``_pg_schema``).
* Readers waiting in ``read(wait=...)`` are woken by appends made by *any* process: an append
  sends ``NOTIFY`` on the schema's channel at commit, and every store LISTENs on it with one
  connection of its own. If that connection drops, it is opened again and every waiter looks
  again (a wait never outlasts its deadline in any case).
* A transaction that PostgreSQL aborts to break a deadlock or a serialization conflict is run
  again (a few times); a server that cannot be reached raises ``StateStoreError``, which the API
  answers with 503.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Self, TypeVar

import asyncpg

from llamactl.server.aio import cancel_and_wait
from llamactl.server.errors import StateStoreError
from llamactl.server.outage import Outage, Reachability
from llamactl.server.state import _pg_commit as commits
from llamactl.server.state import _pg_ops as ops
from llamactl.server.state._common import (
    StreamWaiters,
    check_value,
    closed_error,
    not_started_error,
    read_waiting,
)
from llamactl.server.state._pg_faults import RETRIED, UNREACHABLE, reason, refused_for_now
from llamactl.server.state._pg_listen import AppendNotices
from llamactl.server.state._pg_ops import Connection
from llamactl.server.state._pg_schema import channel_name, migrate
from llamactl.server.state.base import (
    Append,
    CommitResult,
    Delete,
    DeleteLog,
    Index,
    LogEntry,
    StateStore,
    Versioned,
    Write,
)

__all__ = ["PostgreSQLStateStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRIES = 5
FOLD_EVERY = 1.0
"""Seconds between folds of the counters' deltas (each store folds; one fold runs at a time)."""
# asyncpg's pool logs a warning with a traceback each time it fails to reopen a connection while
# the server is down; the store says an outage once, when it begins and when it ends.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)


class PostgreSQLStateStore(StateStore):
    """A ``StateStore`` in PostgreSQL.

    Args:
        dsn: what asyncpg connects to (``postgresql://user:password@host:port/database``).
        schema: the PostgreSQL schema holding the tables (created when missing).
        pool_size: the most connections this store opens (plus one for LISTEN).
        where: how errors name the server (the URI without its password).
        connect_timeout: seconds to wait for a connection.

    Use a store from one event loop, the one that called ``start()``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "llamactl",
        pool_size: int = 10,
        where: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if pool_size < 1:
            raise StateStoreError(f"PostgreSQL pool_size must be at least 1, not {pool_size}")
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._where = where or "PostgreSQL"
        self._timeout = connect_timeout
        self._channel = channel_name(schema)
        # application_name shows whose connections these are in pg_stat_activity.
        self._settings = {"search_path": schema, "application_name": f"llamactl/{schema}"[:63]}
        self._pool: asyncpg.Pool | None = None
        self._folder: asyncio.Task[None] | None = None
        self._columns = ops.Columns()
        self._waiters = StreamWaiters()
        self.conflicts = 0
        """Transactions PostgreSQL aborted to break a deadlock or a serialization conflict (and
        that were run again): each costs up to ``deadlock_timeout`` (1 s by default)."""
        self._closed = False
        self._reach = Reachability("state store", self._where, logger)
        self._notices = AppendNotices(
            dsn,
            settings=self._settings,
            channel=self._channel,
            timeout=connect_timeout,
            waiters=self._waiters,
            reach=self._reach,
            where=self._where,
        )

    @property
    def outage(self) -> Outage | None:
        """PostgreSQL's outage while this store cannot reach it, else None."""
        return self._reach.outage

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._pool else "new"
        return f"PostgreSQLStateStore({self._where!r}, schema={self._schema!r}, {state})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._schema

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Connect, create or migrate the schema, and start listening for appends."""
        if self._closed:
            raise closed_error("PostgreSQL")
        if self._pool is not None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                first = await asyncpg.connect(self._dsn)
                try:
                    await migrate(first, self._schema)
                finally:
                    await first.close()
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    server_settings=self._settings,
                    reset=_keep_session,
                )
        except StateStoreError:
            raise
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise self._error("cannot open the state store", exc) from exc
        self._pool = pool
        try:
            await self._notices.open()
        except BaseException:
            self._pool = None
            await pool.close()
            raise
        self._folder = asyncio.get_running_loop().create_task(self._fold_counts())

    async def close(self) -> None:
        """Close the connections and wake waiting readers (they return what is there)."""
        if self._closed:
            return
        self._closed = True
        self._waiters.notify_all()
        await self._notices.close()
        if self._folder is not None:
            await cancel_and_wait(self._folder)
        pool = self._pool
        if pool is not None:
            try:
                async with asyncio.timeout(5):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    # --- wake-ups ------------------------------------------------------------------------------

    shared = True

    def add_append_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(stream)`` for every append notified on the schema's channel (by any
        process, this one included); returns a function that removes it."""
        return self._notices.add(listener)

    async def _fold_counts(self) -> None:
        """Keep the counters' deltas bounded: fold them every FOLD_EVERY seconds while open (an
        outage is said by the store's reachability; the next fold takes what this one left)."""
        while not self._closed:
            await asyncio.sleep(FOLD_EVERY)
            with contextlib.suppress(StateStoreError):
                # Not counted as a write answered: a fold with nothing to fold writes nothing, so
                # it must not end an outage of a server that refuses writes (a full disk).
                await self._run(ops.fold_counts)

    # --- plumbing ------------------------------------------------------------------------------

    def _check(self) -> asyncpg.Pool:
        if self._closed:
            raise closed_error("PostgreSQL")
        if self._pool is None:
            raise not_started_error("PostgreSQL")
        return self._pool

    def _error(self, what: str, exc: BaseException) -> StateStoreError:
        if isinstance(exc, UNREACHABLE):
            return StateStoreError(
                f"PostgreSQL state store at {self._where}: {what}: {reason(exc)}: "
                "is the server up and reachable?"
            )
        refused = refused_for_now(exc)
        if refused is not None:
            state, why = refused
            return StateStoreError(f"PostgreSQL state store at {self._where}: {what}: {state}: {why}")
        return StateStoreError(f"PostgreSQL state store at {self._where}: {what}: {exc}")

    @contextlib.asynccontextmanager
    async def _connection(self, *, writes: bool = False) -> AsyncIterator[Connection]:
        """A pooled connection; how the call ends is what the store's reachability goes by (a
        read answered does not end an outage of a server that refuses writes)."""
        pool = self._check()
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                try:
                    yield conn
                except BaseException:
                    self._columns.settle(conn, committed=False)
                    raise
                self._columns.settle(conn, committed=True)
        except StateStoreError:
            raise
        except (*UNREACHABLE, asyncpg.PostgresError, UnicodeError) as exc:
            if isinstance(exc, UNREACHABLE):
                self._reach.unreachable(reason(exc))
            elif (refused := refused_for_now(exc)) is not None:
                state, why = refused
                self._reach.unreachable(why, state=state)
            else:
                self._reach.answered(wrote=writes)
            raise self._error("the call failed", exc) from exc
        self._reach.answered(wrote=writes)

    async def _run(self, fn: Callable[[Connection], Awaitable[T]], *, writes: bool = False) -> T:
        """``fn`` on a pooled connection, outside a transaction (one statement); ``writes``: it
        changes something."""
        async with self._connection(writes=writes) as conn:
            return await fn(conn)

    async def _transaction(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """``fn`` in a transaction, run again when PostgreSQL aborts it to break a deadlock."""
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._connection(writes=True) as conn, conn.transaction():
                    return await fn(conn)
            except BaseException as exc:
                cause = exc.__cause__ if isinstance(exc, StateStoreError) else exc
                if not isinstance(cause, RETRIED) or attempt == _RETRIES:
                    raise
                self.conflicts += 1
        raise AssertionError("unreachable")

    async def _write(self, ns: str, index: Index | None, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """A one-statement write, in a transaction only when it gives a field its column."""
        if self._columns.cached(ns, index):
            return await self._run(fn, writes=True)
        return await self._transaction(fn)

    # --- key/value -----------------------------------------------------------------------------

    async def get(self, ns: str, key: str) -> Versioned | None:
        """The value and version of ``ns/key``, or None."""
        return await self._run(lambda c: ops.get(c, ns, key))

    async def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Versioned]:
        """The value and version of each of ``keys`` that ``ns`` holds, in one round trip."""
        return await self._run(lambda c: ops.get_many(c, ns, keys)) if keys else {}

    async def put(self, ns: str, key: str, value: bytes, *, index: Index | None = None) -> int:
        """Write unconditionally; return the new version."""
        data = check_value(value)
        return await self._write(ns, index, lambda c: ops.put(c, self._columns, ns, key, data, index))

    async def cas(
        self, ns: str, key: str, value: bytes, expected_version: int | None, *, index: Index | None = None
    ) -> int | None:
        """Write only if the version is ``expected_version`` (None: only if absent); else None."""
        data = check_value(value)
        return await self._write(
            ns, index, lambda c: ops.cas(c, self._columns, ns, key, data, expected_version, index)
        )

    async def delete(self, ns: str, key: str, expected_version: int | None = None) -> bool:
        """Delete (only at ``expected_version`` when given). True if something was deleted."""
        return await self._run(lambda c: ops.delete(c, ns, key, expected_version), writes=True)

    async def list(
        self, ns: str, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, Versioned]]:
        """Keys of ``ns`` starting with ``prefix``, in key order, strictly after ``after``."""
        return await self._run(lambda c: ops.list_keys(c, ns, prefix, after, limit))

    async def query(
        self,
        ns: str,
        field: str,
        value: str | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> builtins.list[tuple[str, Versioned, str]]:
        """Keys whose index ``field`` is ``value`` (None: any), in sort order, after ``after``."""
        return await self._run(
            lambda c: ops.query(
                c, self._columns, ns, field, value, after=after, limit=limit, descending=descending
            )
        )

    async def count(self, ns: str, field: str) -> dict[str, int]:
        """How many keys hold each value of index ``field``."""
        return await self._run(lambda c: ops.count(c, self._columns, ns, field))

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply ``writes`` in order in one transaction: all of them, or none if a condition fails."""
        checked = [_checked(w) for w in writes]
        try:
            if commits.one_statement(self._columns, checked):
                result = await self._run(
                    lambda c: commits.apply_in_one(c, self._columns, self._channel, checked), writes=True
                )
            else:
                result = await self._transaction(
                    lambda c: commits.apply(c, self._columns, self._channel, checked)
                )
        except ops.ConditionFailed as failed:
            return CommitResult(ok=False, failed=failed.position)
        for stream in dict.fromkeys(w.stream for w in checked if isinstance(w, Append)):
            self._waiters.notify(stream)
        return result

    # --- logs ----------------------------------------------------------------------------------

    async def append(self, stream: str, value: bytes, *, idem_key: str | None = None) -> int:
        """Append to a log; return the entry's offset (the original one for a known ``idem_key``)."""
        data = check_value(value)
        offset = await self._run(lambda c: ops.append(c, self._channel, stream, data, idem_key), writes=True)
        self._waiters.notify(stream)
        return offset

    async def append_many(self, stream: str, values: Sequence[bytes]) -> builtins.list[int]:
        """Append several entries in one statement; return their offsets."""
        checked = [check_value(value) for value in values]
        if not checked:
            return []
        offsets = await self._run(lambda c: ops.append_many(c, self._channel, stream, checked), writes=True)
        self._waiters.notify(stream)
        return offsets

    async def read(
        self, stream: str, from_offset: int = 0, limit: int = 100, wait: float = 0.0
    ) -> builtins.list[LogEntry]:
        """Entries with ``offset >= from_offset``; with ``wait > 0``, wait for the first new one."""
        if wait <= 0 or limit <= 0:
            return await self._run(lambda c: ops.read(c, stream, from_offset, limit))
        self._check()

        async def read_now() -> builtins.list[LogEntry]:
            return await self._run(lambda c: ops.read(c, stream, from_offset, limit))

        return await read_waiting(self._waiters, stream, read_now, wait, lambda: self._closed)

    async def log_length(self, stream: str) -> int:
        """The offset the next entry gets (0 for an unknown stream)."""
        return await self._run(lambda c: ops.log_length(c, stream))

    async def find_idem(self, stream: str, idem_key: str) -> int | None:
        """The offset of the entry appended with ``idem_key``, or None."""
        return await self._run(lambda c: ops.find_idem(c, stream, idem_key))

    async def delete_log(self, stream: str) -> None:
        """Remove a log and its idempotency keys."""
        await self._transaction(lambda c: ops.delete_log(c, stream))

    async def trim_log(self, stream: str, before: int) -> int:
        """Drop entries with offset < ``before`` (never the last one); return how many."""
        return await self._run(lambda c: ops.trim_log(c, stream, before), writes=True)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with: nothing to undo. asyncpg's default sends a
    reset query (unlock advisory locks, close cursors, UNLISTEN, RESET ALL) on every release, one
    round trip per call; this store's calls leave none of those behind (its advisory locks are
    transaction-scoped, it LISTENs on a connection of its own, and its settings are the pool's),
    and asyncpg still rolls back a transaction left open before calling this."""


def _checked(write: Write) -> Write:
    if isinstance(write, Delete | DeleteLog):
        return write
    value = check_value(write.value)
    return write if value is write.value else dataclasses.replace(write, value=value)
