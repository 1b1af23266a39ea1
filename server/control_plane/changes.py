"""The change feed: an ordered log of what changed in a deployment, for the API and the dashboard.

Producers call :meth:`ChangeFeed.emit` from synchronous code (the registry's callbacks); one
writer task appends the changes to the state store log in emit order. Readers follow the log
from any position with :meth:`ChangeFeed.follow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from llamactl.server.state.base import StateStore
from llamactl.server.types import ChangeEvent

__all__ = ["LINGER", "ChangeFeed"]

log = logging.getLogger(__name__)

LINGER = 0.005
"""Seconds the writer waits after the first change of a batch, so changes are written together."""


class ChangeFeed:
    def __init__(self, store: StateStore, deployment: str, stream: str, *, linger: float = LINGER) -> None:
        self._store = store
        self._linger = linger
        self._deployment = deployment
        self._stream = stream
        self._pending: asyncio.Queue[ChangeEvent | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name=f"changes:{self._deployment}")

    async def close(self) -> None:
        if self._writer is not None:
            self._pending.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self._idle.clear()
        self._pending.put_nowait(ChangeEvent(kind=kind, deployment=self._deployment, data=data))

    async def flushed(self) -> None:
        """Wait until every change emitted so far is in the log."""
        await self._idle.wait()

    async def _write(self) -> None:
        while True:
            first = await self._pending.get()
            if first is not None and self._linger > 0:
                # Off the hot path: a task's status change would otherwise cost a commit of its
                # own in the very loop turn that answers the task; waiting a little batches it.
                await asyncio.sleep(self._linger)
            batch = [first]
            while not self._pending.empty():
                batch.append(self._pending.get_nowait())
            done = None in batch
            changes = [c for c in batch if c is not None]
            if changes:
                try:
                    await self._store.append_many(
                        self._stream, [c.model_dump_json().encode() for c in changes]
                    )
                except Exception as exc:
                    kinds = ", ".join(sorted({c.kind for c in changes}))
                    log.error(
                        "could not record %d change(s) (%s) of %s: %s",
                        len(changes),
                        kinds,
                        self._deployment,
                        exc,
                    )
            if self._pending.empty():
                self._idle.set()
            if done:
                return

    async def read(self, from_seq: int = 0, limit: int = 500, wait: float = 0.0) -> list[ChangeEvent]:
        entries = await self._store.read(self._stream, from_seq, limit=limit, wait=wait)
        out = []
        for entry in entries:
            change = ChangeEvent.model_validate_json(entry.value)
            change.seq = entry.offset
            out.append(change)
        return out

    async def follow(self, from_seq: int = 0, poll: float = 15.0) -> AsyncIterator[ChangeEvent]:
        """Every change from ``from_seq`` on, then new ones as they come (until the caller stops)."""
        seq = from_seq
        while True:
            for change in await self.read(seq, wait=poll):
                seq = change.seq + 1
                yield change
