"""The workflow Context of each session: ns ``<deployment>/contexts``, key session id, the JSON of
``Context.to_dict()``, with the Contexts read or written lately in a bounded cache."""

from __future__ import annotations

import json
import logging
from typing import Any

from llamactl.server.control_plane.record_cache import RecordCache
from llamactl.server.state.base import Delete, Put, StateStore

__all__ = ["CONTEXT_CACHE", "CONTEXT_CACHE_BYTES", "SessionContexts"]

log = logging.getLogger(__name__)

CONTEXT_CACHE = 256
CONTEXT_CACHE_BYTES = 32 << 20


class SessionContexts:
    """Reads and writes the sessions' Contexts of one deployment (see the module)."""

    def __init__(self, store: StateStore, deployment: str) -> None:
        self.store = store
        self.deployment = deployment
        self.ns = f"{deployment}/contexts"
        self._fresh_reads = store.shared  # other processes write them too: the cache may be stale
        self._cache: RecordCache[dict[str, Any] | None] = RecordCache(CONTEXT_CACHE, CONTEXT_CACHE_BYTES)

    def __len__(self) -> int:
        """Contexts held in memory now."""
        return len(self._cache)

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """The session's Context (None: it has none yet, or it cannot be read: logged)."""
        if session_id in self._cache and not self._fresh_reads:
            return self._cache.get(session_id)
        found = await self.store.get(self.ns, session_id)
        context: dict[str, Any] | None = None
        if found is not None:
            try:
                context = json.loads(found.value)
            except ValueError as exc:
                log.error(
                    "%s: the Context of session %r cannot be read: %s", self.deployment, session_id, exc
                )
        self._cache.put(session_id, context, 0 if found is None else len(found.value))
        return context

    def write(self, session_id: str, context: dict[str, Any]) -> Put:
        """The write that saves a session's Context (:meth:`remember` it once the commit holds)."""
        return Put(self.ns, session_id, json.dumps(context).encode())

    def remember(self, session_id: str, context: dict[str, Any] | None, size: int) -> None:
        """A Context just written (``size``: the bytes its write held), or None with size 0: a new
        session has none yet."""
        self._cache.put(session_id, context, size)

    def delete(self, session_id: str) -> Delete:
        """The write that deletes a session's Context (:meth:`forget` it once the commit holds)."""
        return Delete(self.ns, session_id)

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id)
