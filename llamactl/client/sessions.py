"""``client.deployment(name).sessions``, sync and async: one resource, both flavours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from llamactl.client import _calls as calls
from llamactl.client.models import Page
from llamactl.server.types import SessionDefinition

if TYPE_CHECKING:
    from llamactl.client.aio import AsyncClient
    from llamactl.client.sync import Client

__all__ = ["AsyncSessions", "Sessions"]


class Sessions:
    """``client.deployment(name).sessions``: tasks in one session share the workflow Context."""

    def __init__(self, client: Client, deployment: str) -> None:
        self._client = client
        self._deployment = deployment

    def list(self) -> list[SessionDefinition]:
        """The sessions (the first page, at most 1000); :meth:`page` and :meth:`iter` read further."""
        return self._client._call(calls.sessions_list(self._deployment))

    def page(
        self, *, limit: int | None = None, cursor: str | None = None, newest_first: bool = False
    ) -> Page[SessionDefinition]:
        """One page of sessions, oldest first (or newest first), and the cursor of the next one."""
        call = calls.sessions_list(self._deployment, limit=limit, cursor=cursor, newest_first=newest_first)
        return self._client._page(call)

    def iter(self, *, page_size: int = 1000) -> Iterator[SessionDefinition]:
        """Every session, a page per request."""
        cursor: str | None = None
        while True:
            page = self.page(limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def create(self) -> SessionDefinition:
        """A new session: ``tasks.run(..., session_id=sessions.create().session_id)``."""
        return self._client._call(calls.sessions_create(self._deployment))

    def get(self, session_id: str) -> SessionDefinition:
        return self._client._call(calls.sessions_get(self._deployment, session_id))

    def delete(self, session_id: str) -> None:
        self._client._call(calls.sessions_delete(self._deployment, session_id))


class AsyncSessions:
    """``client.deployment(name).sessions``: tasks in one session share the workflow Context."""

    def __init__(self, client: AsyncClient, deployment: str) -> None:
        self._client = client
        self._deployment = deployment

    async def list(self) -> list[SessionDefinition]:
        """The sessions (the first page, at most 1000); :meth:`page` and :meth:`iter` read further."""
        return await self._client._call(calls.sessions_list(self._deployment))

    async def page(
        self, *, limit: int | None = None, cursor: str | None = None, newest_first: bool = False
    ) -> Page[SessionDefinition]:
        """One page of sessions, oldest first (or newest first), and the cursor of the next one."""
        call = calls.sessions_list(self._deployment, limit=limit, cursor=cursor, newest_first=newest_first)
        return await self._client._page(call)

    async def iter(self, *, page_size: int = 1000) -> AsyncIterator[SessionDefinition]:
        """Every session, a page per request."""
        cursor: str | None = None
        while True:
            page = await self.page(limit=page_size, cursor=cursor)
            for session in page.items:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def create(self) -> SessionDefinition:
        """A new session: ``tasks.run(..., session_id=sessions.create().session_id)``."""
        return await self._client._call(calls.sessions_create(self._deployment))

    async def get(self, session_id: str) -> SessionDefinition:
        return await self._client._call(calls.sessions_get(self._deployment, session_id))

    async def delete(self, session_id: str) -> None:
        await self._client._call(calls.sessions_delete(self._deployment, session_id))
