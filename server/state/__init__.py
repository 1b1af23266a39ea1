"""server/state: the ``StateStore`` contract and its backends, chosen by ``state_store_uri``.

``open_state_store(uri)`` picks the backend: ``sqlite:///path`` (default) or ``memory://``.
"""

from __future__ import annotations

from server.state.base import LogEntry, StateStore, Versioned
from server.state.factory import open_state_store
from server.state.memory import MemoryStateStore
from server.state.sqlite import SQLiteStateStore

__all__ = [
    "LogEntry",
    "MemoryStateStore",
    "SQLiteStateStore",
    "StateStore",
    "Versioned",
    "open_state_store",
]
