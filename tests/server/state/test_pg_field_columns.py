"""A PostgreSQL store gives a new indexed field its column inside a transaction; other calls of the
same store must not use that column before the transaction commits, since a rollback takes it back
(a later field may then get it, and the write that used it belongs to neither).

Real server (see ``tests/postgres.py``), a fresh schema per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from llamactl.server.state.base import Cas, Index, Put
from tests.e2e.waiting import eventually
from tests.postgres import PostgresSchema

PROMPT = 10.0


@pytest.fixture
async def pg() -> AsyncIterator[PostgresSchema]:
    schema = PostgresSchema()
    yield schema
    await schema.drop()


async def test_a_column_given_in_a_transaction_that_rolls_back_is_used_by_no_other_write(
    pg: PostgresSchema,
) -> None:
    async with pg.store() as store:
        await store.put("t", "seed", b"", index=Index("0", {"a": "1"}))  # the namespace's columns known
        await store.put("t", "held", b"h")
        blocker = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
        watcher = await asyncpg.connect(pg.dsn)
        try:
            hold = blocker.transaction()
            await hold.start()
            await blocker.execute("UPDATE kv SET version = version + 1 WHERE ns = 't' AND key = 'held'")
            # Gives "b" a column, then waits for the row the blocker holds; the blocker's change
            # makes its condition fail: the commit rolls back, the column with it.
            failing = asyncio.create_task(
                store.commit([Put("t", "k1", b"1", Index("1", {"b": "x"})), Cas("t", "held", b"h2", 1)])
            )

            async def waiting_for_locks(n: int) -> bool:
                found = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                    "AND wait_event_type = 'Lock'",
                    f"llamactl/{pg.name}",
                )
                return int(found) >= n

            await eventually(lambda: waiting_for_locks(1), PROMPT)
            other = asyncio.create_task(store.put("t", "k2", b"2", index=Index("2", {"b": "y"})))

            async def other_done_or_waiting() -> bool:
                return other.done() or await waiting_for_locks(2)

            await eventually(other_done_or_waiting, PROMPT)
            await hold.commit()
            async with asyncio.timeout(PROMPT):
                result = await failing
                assert await other == 1
        finally:
            await blocker.close()
            await watcher.close()
        assert not result.ok and result.failed == 1
        assert await store.get("t", "k1") is None
        assert [k for k, _, _ in await store.query("t", "b", "y")] == ["k2"]
        assert await store.count("t", "b") == {"y": 1}
        await store.put("t", "k3", b"3", index=Index("3", {"c": "z"}))
        assert [k for k, _, _ in await store.query("t", "c")] == ["k3"]
        assert await store.count("t", "c") == {"z": 1}
