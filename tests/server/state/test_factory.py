"""open_state_store: which URI gives which backend, and the errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import MemoryStateStore, SQLiteStateStore, open_state_store


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


@pytest.mark.parametrize(
    ("uri", "backend"),
    [
        ("redis://localhost:6379/0", "Redis"),
        ("postgresql://user@localhost/llamactl", "PostgreSQL"),
        ("postgres://localhost/llamactl", "PostgreSQL"),
    ],
)
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
