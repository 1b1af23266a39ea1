"""Backends the contract suite runs against: memory, SQLite (both writers) and PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (database ``test``; ``LLAMACTL_TEST_POSTGRES`` names
another); each test gets a fresh schema, dropped at teardown, so runs never see each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llamactl.server.state import MemoryStateStore, SQLiteStateStore, StateStore
from tests.postgres import PostgresSchema

# name -> build a (not started) store whose files, if any, live under the given folder; stores of
# one test built by the same backend share their data (files, or the PostgreSQL schema).
BACKENDS: dict[str, Callable[[Path, PostgresSchema], StateStore]] = {
    "memory": lambda tmp, pg: MemoryStateStore(),
    "sqlite": lambda tmp, pg: SQLiteStateStore(tmp / "state" / "state.db", writer="inline"),
    "sqlite-thread": lambda tmp, pg: SQLiteStateStore(tmp / "state" / "state.db", writer="thread"),
    "postgresql": lambda tmp, pg: pg.store(),
}

MakeStore = Callable[[], StateStore]


@pytest.fixture(params=list(BACKENDS))
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Builds stores of one backend (not started); every one is closed at teardown."""
    build = BACKENDS[request.param]
    made: list[StateStore] = []
    pg = PostgresSchema()

    def make() -> StateStore:
        store = build(tmp_path, pg)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    await pg.drop()


@pytest.fixture
async def store(make_store: MakeStore) -> StateStore:
    """A started store of each backend (closed by ``make_store``)."""
    s = make_store()
    await s.start()
    return s
