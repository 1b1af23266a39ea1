"""server/state: the ``StateStore`` contract and its backends, chosen by ``state_store_uri``.

``open_state_store(uri)`` picks the backend: ``sqlite:///path`` (default), ``memory://`` or
``postgresql://...`` (imported only when named: asyncpg is optional).
"""

from __future__ import annotations

from llamactl.server.state.base import LogEntry, StateStore, Versioned
from llamactl.server.state.factory import open_state_store
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.state.sqlite import SQLiteStateStore

__all__ = [
    "LogEntry",
    "MemoryStateStore",
    "SQLiteStateStore",
    "StateStore",
    "Versioned",
    "open_state_store",
]
