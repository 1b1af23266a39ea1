"""The control plane's session records (ns ``<deployment>/sessions``; see ``records.py``): made,
read, listed, counted and deleted, each with its change-feed entry where it changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.contexts import SessionContexts
from llamactl.server.control_plane.stored import Page, SessionRecord
from llamactl.server.errors import SessionNotFound
from llamactl.server.state.base import Cas, Delete, StateStore

__all__ = ["SESSION_TASKS_SHOWN", "SessionRecords", "dump"]

log = logging.getLogger("llamactl.server.control_plane.records")

M = TypeVar("M", bound=BaseModel)

SESSION_TASKS_SHOWN = 1000


def dump(model: BaseModel) -> bytes:
    """A record as it is stored."""
    return model.model_dump_json().encode()


class SessionRecords:
    """The session half of :class:`~llamactl.server.control_plane.records.ControlPlaneRecords`."""

    store: StateStore
    deployment: str
    changes: ChangeFeed
    contexts: SessionContexts
    sessions_ns: str
    session_state_ns: str
    tasks_ns: str
    unreadable: int

    async def create_session(self, session_id: str) -> tuple[SessionRecord, bool]:
        """Create the session if it does not exist; return it and whether it was created."""
        record = SessionRecord(session_id=session_id, created_at=time.time())
        result = await self.store.commit(
            [
                Cas(self.sessions_ns, session_id, dump(record), None, record.index()),
                self.changes.entry("session.created", {"session_id": session_id}),
            ]
        )
        if result.ok:
            self.contexts.remember(session_id, None, 0)
            return record, True
        return await self.get_session(session_id), False

    async def find_session(self, session_id: str) -> SessionRecord | None:
        found = await self.find_session_versioned(session_id)
        return None if found is None else found[0]

    async def find_session_versioned(self, session_id: str) -> tuple[SessionRecord, int] | None:
        found = await self.store.get(self.sessions_ns, session_id)
        if found is None:
            return None
        record = self._parse_session(session_id, found.value)
        return (SessionRecord(session_id=session_id) if record is None else record), found.version

    async def find_sessions(self, session_ids: Iterable[str]) -> list[tuple[SessionRecord, int]]:
        """The sessions of these ids that exist and their versions, read together (an unreadable
        one logged, skipped)."""
        found = await self.store.get_many(self.sessions_ns, list(session_ids))
        parsed = ((self._parse_session(key, stored.value), stored.version) for key, stored in found.items())
        return [(record, version) for record, version in parsed if record is not None]

    def _parse_session(self, session_id: str, raw: bytes) -> SessionRecord | None:
        return self._parsed(SessionRecord, "session", session_id, raw)

    def _parsed(self, model: type[M], kind: str, key: str, raw: bytes) -> M | None:
        """``raw`` as a ``model`` record, or None (counted and logged) when it cannot be read."""
        try:
            return model.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            self.unreadable += 1
            log.error("%s: %s record %r cannot be read, skipping it: %s", self.deployment, kind, key, exc)
            return None

    def session_write(self, record: SessionRecord, version: int | None) -> Cas:
        """Write a session record at ``version`` (None: create it)."""
        return Cas(self.sessions_ns, record.session_id, dump(record), version, record.index())

    async def get_session_versioned(self, session_id: str) -> tuple[SessionRecord, int]:
        found = await self.find_session_versioned(session_id)
        if found is None:
            raise SessionNotFound(session_id, self.deployment)
        return found

    async def get_session(self, session_id: str) -> SessionRecord:
        record = await self.find_session(session_id)
        if record is None:
            raise SessionNotFound(session_id, self.deployment)
        return record

    async def session_task_ids(self, session_id: str, limit: int = SESSION_TASKS_SHOWN) -> list[str]:
        """The ids of the session's newest tasks (up to ``limit``), oldest first."""
        rows = await self.store.query(self.tasks_ns, "session", session_id, limit=limit, descending=True)
        return [key for key, _, _ in reversed(rows)]

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None, descending: bool = False
    ) -> Page:
        """Sessions in creation order (``descending``: newest first), a page at a time."""
        rows = await self.store.query(
            self.sessions_ns, "all", "", after=cursor, limit=limit, descending=descending
        )
        items: list[SessionRecord] = []
        for key, found, _ in rows:
            try:
                items.append(SessionRecord.model_validate_json(found.value))
            except (ValidationError, ValueError):
                self.unreadable += 1
                items.append(SessionRecord(session_id=key))
        return Page(items=items, next_cursor=rows[-1][2] if len(rows) == limit else None)

    async def count_sessions(self) -> int:
        return (await self.store.count(self.sessions_ns, "all")).get("", 0)

    async def session_state(self, session_id: str) -> bytes | None:
        """The session's free-form state (JSON), None when none was set; SessionNotFound."""
        await self.get_session(session_id)
        stored = await self.store.get(self.session_state_ns, session_id)
        return None if stored is None else stored.value

    async def set_session_state(self, session_id: str, value: bytes) -> None:
        """Replace the session's free-form state (JSON); SessionNotFound. Written beside the
        record, not under its version, then the record looked at again: a session deleted
        before or meanwhile has the state deleted after it too."""
        await self.store.put(self.session_state_ns, session_id, value)
        if await self.find_session(session_id) is None:
            await self.store.commit([Delete(self.session_state_ns, session_id)])
            raise SessionNotFound(session_id, self.deployment)

    async def delete_session(self, session_id: str, version: int) -> bool:
        """Delete the session and its Context if its record is still at ``version``; False if
        it is not (changed or gone meanwhile: nothing was deleted)."""
        result = await self.store.commit(
            [
                Delete(self.sessions_ns, session_id, expected_version=version),
                self.contexts.delete(session_id),
                Delete(self.session_state_ns, session_id),
                self.changes.entry("session.deleted", {"session_id": session_id}),
            ]
        )
        if result.ok:
            self.contexts.forget(session_id)
        return result.ok
