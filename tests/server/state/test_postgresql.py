"""The PostgreSQL state store beyond the contract: several processes on one schema, the schema's
migrations, and the LISTEN connection or the pool's connections killed under it.

Real server (see ``tests/postgres.py``), a fresh schema per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import LogEntry, StateStore, Versioned
from llamactl.server.state import _pg_ops as ops
from llamactl.server.state._pg_commit import apply
from llamactl.server.state._pg_schema import _MIGRATIONS, SCHEMA_VERSION, channel_name
from llamactl.server.state.base import Append, Cas, Delete, DeleteLog, Index, Put, Write
from llamactl.server.state.postgresql import FOLD_EVERY, PostgreSQLStateStore
from tests.e2e.waiting import eventually
from tests.postgres import PostgresSchema
from tests.server.mq.tcp_proxy import TcpProxy

PROMPT = 3.0


@pytest.fixture
async def pg() -> AsyncIterator[PostgresSchema]:
    schema = PostgresSchema()
    yield schema
    await schema.drop()


@pytest.fixture
async def stores(pg: PostgresSchema) -> AsyncIterator[list[StateStore]]:
    """Two started stores on one schema: as two servers sharing a database."""
    made = [pg.store(), pg.store()]
    for store in made:
        await store.start()
    yield made
    for store in made:
        await store.close()


async def test_an_append_by_another_process_wakes_a_waiting_reader(pg: PostgresSchema) -> None:
    async with pg.store() as store:
        await store.append("s", b"before")
        reader = asyncio.create_task(store.read("s", 1, wait=30))
        await asyncio.sleep(0.2)  # let the reader reach its wait (it then waits up to 30 s)
        assert not reader.done()
        script = textwrap.dedent(
            f"""
            import asyncio
            from llamactl.server.state import open_state_store
            async def main():
                async with open_state_store({pg.uri!r}) as store:
                    print(await store.append("s", b"from another process"))
            asyncio.run(main())
            """
        )
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "1"
        async with asyncio.timeout(PROMPT):
            assert await reader == [LogEntry(1, b"from another process")]
        assert time.monotonic() - started < 30


async def test_two_stores_share_offsets_idempotency_and_versions(stores: list[StateStore]) -> None:
    a, b = stores

    async def append(store: StateStore, i: int) -> int:
        return await store.append("s", b"%d" % (i % 50), idem_key=f"k{i % 50}")

    offsets = await asyncio.gather(*(append(stores[i % 2], i) for i in range(200)))
    assert sorted(set(offsets)) == list(range(50))  # one entry per key, gap-free, whoever wrote it
    assert await a.log_length("s") == await b.log_length("s") == 50

    async def increment(store: StateStore) -> None:
        while True:
            current = await store.get("ns", "counter")
            assert current is not None
            if await store.cas("ns", "counter", b"%d" % (int(current.value) + 1), current.version):
                return

    await a.put("ns", "counter", b"0")
    await asyncio.gather(*(increment(stores[i % 2]) for i in range(40)))
    assert await b.get("ns", "counter") == Versioned(b"40", 41)


async def test_two_stores_giving_new_fields_columns_at_once_never_collide(stores: list[StateStore]) -> None:
    a, b = stores
    await asyncio.gather(
        a.put("t", "x", b"", index=Index("1:x", {"status": "queued"})),
        b.put("t", "y", b"", index=Index("2:y", {"session": "s1"})),
        a.put("t", "z", b"", index=Index("3:z", {"service": "echo"})),
    )
    for store in stores:
        assert [k for k, _, _ in await store.query("t", "status", "queued")] == ["x"]
        assert [k for k, _, _ in await store.query("t", "session", "s1")] == ["y"]
        assert await store.count("t", "service") == {"echo": 1}


async def test_servers_starting_together_create_the_schema_once(pg: PostgresSchema) -> None:
    made = [pg.store() for _ in range(4)]
    try:
        await asyncio.gather(*(store.start() for store in made))
        await made[0].put("ns", "k", b"v")
        assert await made[3].get("ns", "k") == Versioned(b"v", 1)
    finally:
        for store in made:
            await store.close()


async def test_a_schema_from_a_newer_llamactl_is_refused(pg: PostgresSchema) -> None:
    async with pg.store():
        pass
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(
            f"UPDATE \"{pg.name}\".llamactl_meta SET value = '99' WHERE name = 'schema_version'"
        )
    finally:
        await conn.close()
    with pytest.raises(StateStoreError, match="schema version 99, newer than this llamactl"):
        await pg.store().start()


async def _schema_at(pg: PostgresSchema, version: int) -> asyncpg.Connection:
    """A connection to ``pg``'s schema as llamactl of schema ``version`` left it: one task-like
    record counted by its status, one not, and one log entry with an idempotency key."""
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    await conn.execute(f'CREATE SCHEMA "{pg.name}"')
    await conn.execute("CREATE TABLE llamactl_meta (name text PRIMARY KEY, value text NOT NULL)")
    for step in range(1, version + 1):
        await conn.execute(_MIGRATIONS[step])
    await conn.execute("INSERT INTO llamactl_meta VALUES ('schema_version', $1)", str(version))
    await conn.execute("INSERT INTO kv_fields VALUES ('t', 'status', 0)")
    await conn.execute(
        "INSERT INTO kv (ns, key, value, version, sort, i0) VALUES ('t', 'a', '', 1, 'a', 'queued')"
    )
    await conn.execute(
        "INSERT INTO kv (ns, key, value, version, sort, i0) VALUES ('t', 'b', '', 1, 'b', 'done')"
    )
    await conn.execute("SELECT llamactl_append('log', 'k0', 'e0', 'nobody')")
    return conn


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
async def test_a_schema_of_an_older_version_is_brought_up_to_date(pg: PostgresSchema, version: int) -> None:
    """Version 2 added appending several entries of a stream in one call; version 3 counters
    without a hot row and entries numbered at commit. What an older version wrote still counts."""
    conn = await _schema_at(pg, version)
    try:
        async with pg.store() as store:
            assert await store.count("t", "status") == {"queued": 1, "done": 1}
            found = await store.get("t", "b")
            assert found is not None
            writes = [
                Cas("t", "b", b"", found.version, Index("b", {"status": "queued"})),
                Append("log", b"e0", idem_key="k0"),
                Append("log", b"e1", idem_key="k1"),
                Append("log", b"e2", at_commit=True),
            ]
            assert (await store.commit(writes)).results[1:3] == (0, 1)
            assert [e.value for e in await store.read("log")] == [b"e0", b"e1", b"e2"]
            assert await store.count("t", "status") == {"queued": 2}
        version_now = await conn.fetchval("SELECT value FROM llamactl_meta WHERE name = 'schema_version'")
        assert version_now == str(SCHEMA_VERSION)
    finally:
        await conn.close()


async def test_data_outlives_the_store_that_wrote_it(pg: PostgresSchema) -> None:
    async with pg.store() as store:
        await store.put("ns", "k", b"v", index=Index("1:k", {"status": "done"}))
        await store.append("s", b"e", idem_key="once")
    async with pg.store() as again:
        assert await again.get("ns", "k") == Versioned(b"v", 1)
        assert await again.count("ns", "status") == {"done": 1}
        assert await again.append("s", b"e", idem_key="once") == 0


async def _terminate(pg: PostgresSchema, where: str) -> int:
    """Kill the server side of this store's connections that match ``where``; how many."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE pid <> pg_backend_pid() AND application_name = $1 AND {where}",
            f"llamactl/{pg.name}",
        )
    finally:
        await conn.close()
    return len(rows)


async def test_a_killed_listen_connection_is_opened_again_and_wakes_readers(pg: PostgresSchema) -> None:
    async with pg.store() as store, pg.store() as other:
        assert isinstance(store, PostgreSQLStateStore)
        killed = await _terminate(pg, "query LIKE 'LISTEN%'")
        assert killed >= 1
        # Once the store listens again, another store's append wakes a reader of this one.
        async with asyncio.timeout(15):
            while not store._notices.listening:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polls a private field: no event to wait on
        reader = asyncio.create_task(store.read("s", 0, wait=30))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await other.append("s", b"x")
        async with asyncio.timeout(PROMPT):
            assert await reader == [LogEntry(0, b"x")]
        assert time.monotonic() - started < PROMPT


async def test_killed_pool_connections_fail_calls_with_a_state_store_error_then_recover(
    pg: PostgresSchema,
) -> None:
    async with pg.store() as store:
        await store.put("ns", "k", b"v")
        killed = await _terminate(pg, "query NOT LIKE 'LISTEN%'")
        assert killed >= 1
        outcomes: list[str] = []
        async with asyncio.timeout(15):
            while not outcomes or outcomes[-1] != "ok":
                try:
                    assert await store.get("ns", "k") == Versioned(b"v", 1)
                    outcomes.append("ok")
                except StateStoreError as exc:
                    assert "PostgreSQL state store at postgresql://postgres@127.0.0.1:5432/test" in str(exc)
                    outcomes.append("error")
        print(f"after killing {killed} connections: {outcomes}")


async def test_append_listeners_hear_appends_of_other_processes(stores: list[StateStore]) -> None:
    a, b = stores
    assert a.shared and b.shared
    heard: list[str] = []
    got = asyncio.Event()

    def listener(stream: str) -> None:
        heard.append(stream)
        got.set()

    remove = a.add_append_listener(listener)
    await b.append("events/t1", b"x")
    async with asyncio.timeout(PROMPT):
        await got.wait()
    assert heard == ["events/t1"]
    remove()
    got.clear()
    await b.commit([Append("events/t2", b"y")])
    await b.append("events/t3", b"z")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await got.wait()  # removed: it hears nothing more
    assert heard == ["events/t1"]


async def test_busy_commits_sharing_a_log_and_counters_never_deadlock(stores: list[StateStore]) -> None:
    """Task-like commits from two stores at once: records with indexed (counted) fields, then an
    entry of one shared log, as every task transition writes its change-feed entry. Before log
    heads were taken last, a commit holding the log's head waited for a counter row held by one
    waiting for the head: PostgreSQL broke each such deadlock after a second."""
    a, b = stores
    ns = "t"

    async def task(store: StateStore, i: int) -> None:
        key = f"task-{i}"
        await store.commit(
            [
                Cas("s", key, b"", None, Index(f"{i:05d}", {"all": ""})),  # its session
                Append("changes", b"session"),
                Cas(ns, key, b"q", None, Index(f"{i:05d}", {"status": "queued", "svc": "echo/queued"})),
                Append("changes", b"queued"),
            ]
        )
        for status in ("running", "completed"):
            found = await store.get(ns, key)
            assert found is not None
            index = Index(f"{i:05d}", {"status": status, "svc": f"echo/{status}"})
            await store.commit(
                [
                    Append(f"events/{key}", b"e"),
                    Cas(ns, key, b"x", found.version, index),
                    Append("changes", status.encode()),
                ]
            )

    async with asyncio.timeout(60):
        await asyncio.gather(*(task(stores[i % 2], i) for i in range(120)))
    assert await a.count(ns, "status") == {"completed": 120}
    assert isinstance(a, PostgreSQLStateStore) and isinstance(b, PostgreSQLStateStore)
    assert a.conflicts + b.conflicts == 0


@contextlib.asynccontextmanager
async def _open_transaction(pg: PostgresSchema, writes: list[Write]) -> AsyncIterator[None]:
    """``writes`` applied as a store's commit applies them, in a transaction left open meanwhile
    (as a commit is while its server makes its round trips), committed on the way out."""
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    try:
        async with conn.transaction():
            await apply(conn, ops.Columns(), channel_name(pg.name), writes)
            yield
    finally:
        await conn.close()


async def test_a_run_of_deletes_is_one_round_trip(pg: PostgresSchema) -> None:
    """Pruning 200 tasks: their logs and their records are a few statements, not one or two
    round trips per write (which cost the loop ~650 us per pruned task, more than a task)."""
    keys = [f"t{i}" for i in range(200)]
    async with pg.store() as store:
        await store.commit([Put("tasks", k, b"v", Index(k, {"status": "done"})) for k in keys])
        await store.commit([Append(f"events/{k}", b"e") for k in keys[::2]])
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    queries: list[str] = []
    try:
        conn.add_query_logger(lambda record: queries.append(record.query))
        async with conn.transaction():
            writes: list[Write] = [DeleteLog(f"events/{k}") for k in keys]
            result = await apply(
                conn, ops.Columns(), channel_name(pg.name), writes + [Delete("tasks", k) for k in keys]
            )
    finally:
        await conn.close()
    assert result.results == tuple([1, 0] * 100 + [1] * 200)
    assert len([q for q in queries if "DELETE" in q]) == 3  # the logs, their heads, the records
    async with pg.store() as store:
        assert await store.count("tasks", "status") == {} and await store.list("tasks") == []


async def test_a_commit_open_elsewhere_does_not_hold_up_commits_counted_alike(pg: PostgresSchema) -> None:
    """Two tasks of one status: the second's commit went through only once the first's ended,
    both changing the one row counting that status (commits of one server queued behind each
    other on it). Counts are now deltas, which no commit waits for."""
    async with pg.store() as store:
        await store.put("t", "first", b"", index=Index("1", {"status": "queued"}))
        async with _open_transaction(pg, [Put("t", "held", b"", Index("2", {"status": "queued"}))]):
            await asyncio.wait_for(
                store.put("t", "next", b"", index=Index("3", {"status": "queued"})), PROMPT
            )
            assert await store.count("t", "status") == {"queued": 2}
        assert await store.count("t", "status") == {"queued": 3}


async def test_a_commit_open_elsewhere_does_not_hold_up_commits_to_the_change_feed(
    pg: PostgresSchema,
) -> None:
    """Every commit of a task appends to its deployment's change feed. Its entry is numbered as
    its transaction commits, so an open one holds the feed's head row for none of its length:
    another commit appends meanwhile, and their entries come in the order they committed."""
    async with pg.store() as store:
        await store.append("changes", b"c0")
        held = [Put("t", "held", b""), Append("changes", b"held", at_commit=True)]
        async with _open_transaction(pg, held):
            result = await asyncio.wait_for(
                store.commit([Put("t", "next", b""), Append("changes", b"next", at_commit=True)]), PROMPT
            )
            assert result.ok
            assert [e.value for e in await store.read("changes")] == [b"c0", b"next"]
        assert [e.value for e in await store.read("changes")] == [b"c0", b"next", b"held"]


async def test_counter_deltas_are_folded_and_spent_counters_dropped(pg: PostgresSchema) -> None:
    async with pg.store() as store:
        for key, status in [("a", "queued"), ("b", "queued"), ("c", "done")]:
            await store.put("t", key, b"", index=Index(key, {"status": status}))
        await store.delete("t", "c")
        conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
        try:
            # Each store folds every FOLD_EVERY seconds: the deltas go, the counts stay.
            async def folded() -> bool:
                return not await conn.fetchval("SELECT count(*) FROM kv_count_delta")

            await eventually(folded, 10 * FOLD_EVERY)
            assert await store.count("t", "status") == {"queued": 2}
            assert await conn.fetch("SELECT value, n FROM kv_count ORDER BY value") == [("queued", 2)]
            await store.delete("t", "a")
            await store.delete("t", "b")
            # This fold, or the store's own if it holds the fold's lock now: a spent count goes.
            await conn.fetchval("SELECT llamactl_fold_counts()")
            await eventually(folded, 10 * FOLD_EVERY)
            assert await conn.fetchval("SELECT count(*) FROM kv_count") == 0
            assert await store.count("t", "status") == {}
        finally:
            await conn.close()


async def test_a_store_says_while_postgresql_is_unreachable_and_when_it_answers_again(
    pg: PostgresSchema, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(pg.dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    through = target._replace(netloc=f"{target.username}:secret@127.0.0.1:{proxy.port}").geturl()
    schema = PostgresSchema(through)
    schema.name = pg.name  # dropped by the fixture
    try:
        async with schema.store() as store:
            assert isinstance(store, PostgreSQLStateStore)
            await store.put("ns", "k", b"v")
            assert store.outage is None
            before = time.time()
            await proxy.stop()  # PostgreSQL is gone, as far as the store can tell
            for _ in range(3):
                with pytest.raises(StateStoreError):
                    await store.get("ns", "k")
            outage = store.outage
            assert outage is not None and outage.since >= before
            assert outage.what == "state store" and "secret" not in outage.describe()
            assert f"127.0.0.1:{proxy.port}" in outage.where
            said = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(said) == 1, "said once, not on every failed call"
            assert not any(r.exc_info for r in caplog.records), "no tracebacks for an outage"
            await proxy.start()
            async with asyncio.timeout(15):
                while True:
                    try:
                        assert await store.get("ns", "k") == Versioned(b"v", 1)
                        break
                    except StateStoreError:
                        await asyncio.sleep(0.05)
            assert store.outage is None
            assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await proxy.stop()
