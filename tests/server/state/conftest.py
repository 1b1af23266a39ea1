"""Backends the contract suite runs against. Add Redis/PostgreSQL by adding an entry to BACKENDS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llamactl.server.state import MemoryStateStore, SQLiteStateStore, StateStore

# name -> build a (not started) store whose files, if any, live under the given folder.
BACKENDS: dict[str, Callable[[Path], StateStore]] = {
    "memory": lambda tmp: MemoryStateStore(),
    "sqlite": lambda tmp: SQLiteStateStore(tmp / "state" / "state.db", writer="inline"),
    "sqlite-thread": lambda tmp: SQLiteStateStore(tmp / "state" / "state.db", writer="thread"),
}

MakeStore = Callable[[], StateStore]


@pytest.fixture(params=list(BACKENDS))
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Builds stores of one backend (not started); every one is closed at teardown."""
    build = BACKENDS[request.param]
    made: list[StateStore] = []

    def make() -> StateStore:
        store = build(tmp_path)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> StateStore:
    """A started store of each backend (closed by ``make_store``)."""
    s = make_store()
    await s.start()
    return s
