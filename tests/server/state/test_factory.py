"""open_state_store: which URI gives which backend, and the errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import MemoryStateStore, SQLiteStateStore, open_state_store
from llamactl.server.state.postgresql import PostgreSQLStateStore
from tests.missing_package import error_without


def test_memory() -> None:
    assert isinstance(open_state_store("memory://"), MemoryStateStore)


def test_sqlite_relative_path_is_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state_store("sqlite:///.llamactl/state.db")
    assert isinstance(store, SQLiteStateStore)
    assert store.path == ".llamactl/state.db"


def test_sqlite_absolute_path_has_four_slashes(tmp_path: Path) -> None:
    store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    assert isinstance(store, SQLiteStateStore)
    assert store.path == f"{tmp_path}/state.db"
    assert store.path.startswith("/")


def test_sqlite_in_memory() -> None:
    store = open_state_store("sqlite:///:memory:")
    assert isinstance(store, SQLiteStateStore)
    assert store.path == ":memory:"


def test_sqlite_options() -> None:
    store = open_state_store("sqlite:///state.db?synchronous=full&busy_timeout=1.5")
    assert isinstance(store, SQLiteStateStore)
    assert store.path == "state.db"
    assert store.synchronous == "FULL"


@pytest.mark.parametrize(
    "uri", ["sqlite://", "sqlite:///", "sqlite://host/state.db", "sqlite:///x.db?synchronous=OFF"]
)
def test_malformed_sqlite_uri(uri: str) -> None:
    with pytest.raises(StateStoreError, match=r"sqlite:///|synchronous"):
        open_state_store(uri)


def test_unknown_sqlite_option() -> None:
    with pytest.raises(StateStoreError, match=r"unknown option.*journal.*synchronous, busy_timeout"):
        open_state_store("sqlite:///x.db?journal=off")


@pytest.mark.parametrize(("uri", "backend"), [("redis://localhost:6379/0", "Redis")])
def test_planned_backends_are_not_available_yet(uri: str, backend: str) -> None:
    with pytest.raises(StateStoreError) as err:
        open_state_store(uri)
    message = str(err.value)
    assert f"{backend} backend is not available yet" in message
    assert "sqlite:///" in message
    assert "memory://" in message


@pytest.mark.parametrize("uri", ["mongodb://localhost/x", "state.db", "file:///tmp/x.db"])
def test_unknown_scheme_lists_the_valid_ones(uri: str) -> None:
    with pytest.raises(StateStoreError) as err:
        open_state_store(uri)
    assert "sqlite:///<path>" in str(err.value)
    assert "memory://" in str(err.value)


def test_memory_takes_no_path() -> None:
    with pytest.raises(StateStoreError, match="memory:// takes no path"):
        open_state_store("memory://somewhere")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_with_its_options(scheme: str) -> None:
    store = open_state_store(f"{scheme}://u@127.0.0.1:5432/db?schema=my_app&pool_size=3&sslmode=disable")
    assert isinstance(store, PostgreSQLStateStore)
    assert store.schema == "my_app"
    assert "sslmode=disable" in store._dsn  # driver options go through, ours do not
    assert "schema" not in store._dsn and "pool_size" not in store._dsn


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("schema=a-b", "schema must be a plain identifier"),
        ("schema=1abc", "schema must be a plain identifier"),
        ("pool_size=many", "pool_size must be a number"),
        ("pool_size=0", "pool_size must be >= 1"),
        ("connect_timeout=-1", "connect_timeout > 0"),
    ],
)
def test_postgresql_bad_options_say_what_is_valid(query: str, problem: str) -> None:
    with pytest.raises(StateStoreError, match=problem):
        open_state_store(f"postgresql://u:secret@127.0.0.1/db?{query}")


async def test_an_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    store = open_state_store("postgresql://u:s3cr3t@127.0.0.1:1/db?connect_timeout=5")
    with pytest.raises(StateStoreError) as err:
        await store.start()
    message = str(err.value)
    assert "postgresql://u:***@127.0.0.1:1/db" in message
    assert "is the server up" in message
    assert "s3cr3t" not in message and "s3cr3t" not in repr(store)


def test_without_asyncpg_the_error_says_what_to_install() -> None:
    name, message = error_without(
        ["asyncpg"],
        "from llamactl.server.state import open_state_store\nopen_state_store('postgresql://u@127.0.0.1/db')",
    )
    assert name == "StateStoreError"
    assert "pip install 'llamactl[postgresql]'" in message


def test_a_password_in_the_query_is_not_shown() -> None:
    """asyncpg takes `?password=` as the password: a bad option's error showed it."""
    with pytest.raises(StateStoreError) as err:
        open_state_store("postgresql://u@127.0.0.1/db?password=hunter2&sslpassword=k3y&pool_size=0")
    assert "hunter2" not in str(err.value) and "password=***" in str(err.value)
    assert "k3y" not in str(err.value) and "sslpassword=***" in str(err.value)
