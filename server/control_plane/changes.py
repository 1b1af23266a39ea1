"""The change feed: an ordered log of what changed in a deployment, for the API and the dashboard.

A change that comes with a state change (a task's new status, a session made or deleted) is an
:meth:`ChangeFeed.entry` written in the same commit as that change: neither exists without the other,
so a crash or a full disk loses no entry. Changes with no state of their own (services and replicas
coming and going, from the registry's callbacks) go through :meth:`ChangeFeed.emit`: one writer task
appends them in emit order, keeping and retrying them while the store fails. Readers follow the log
from any position with :meth:`ChangeFeed.follow`; :meth:`ChangeFeed.trim` keeps it bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from llamactl.server.state.base import Append, StateStore
from llamactl.server.types import ChangeEvent

__all__ = ["MAX_PENDING", "ChangeFeed"]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Registry changes kept while the store cannot take them; beyond this the oldest are dropped."""
_RETRY_MAX = 2.0


class ChangeFeed:
    def __init__(self, store: StateStore, deployment: str, stream: str) -> None:
        self._store = store
        self._deployment = deployment
        self.stream = stream
        self._pending: deque[ChangeEvent] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.dropped = 0
        """Registry changes dropped because the store stayed down with MAX_PENDING waiting."""

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name=f"changes:{self._deployment}")

    async def close(self) -> None:
        """Write what is pending (one more try), then stop."""
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    def entry(self, kind: str, data: dict[str, Any]) -> Append:
        """The log write of a change, to commit together with the state change it reports
        (numbered as the commit ends: every commit of a deployment appends to this one log)."""
        change = ChangeEvent(kind=kind, deployment=self._deployment, data=data)
        return Append(self.stream, change.model_dump_json().encode(), at_commit=True)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Record a change that has no state write of its own (written soon, in emit order)."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(ChangeEvent(kind=kind, deployment=self._deployment, data=data))
        self._idle.clear()
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until every change emitted so far is in the log."""
        await self._idle.wait()

    async def _write(self) -> None:
        delay = 0.0
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._pending)
            try:
                await self._store.append_many(self.stream, [c.model_dump_json().encode() for c in batch])
            except Exception as exc:
                if self._closing:
                    log.error(
                        "%s: %d change(s) not recorded at shutdown: %s", self._deployment, len(batch), exc
                    )
                    return
                if delay == 0.0:
                    log.warning("%s: cannot record changes yet (%s): retrying", self._deployment, exc)
                delay = min(_RETRY_MAX, max(0.05, delay * 2))
                await asyncio.sleep(delay)
                continue
            delay = 0.0
            written = {id(c) for c in batch}  # the oldest may have been dropped meanwhile
            while self._pending and id(self._pending[0]) in written:
                self._pending.popleft()

    async def trim(self, keep: int, at_most: int | None = None) -> int:
        """Drop all but the last ``keep`` entries, the oldest ``at_most`` of them at most (one
        delete holds the loop: tens of thousands of entries at once took ~90 ms); return how
        many were dropped."""
        end = await self._store.log_length(self.stream)
        before = end - keep
        if before <= 0:
            return 0
        if at_most is not None:
            first = await self._store.read(self.stream, 0, limit=1)
            if first:
                before = min(before, first[0].offset + at_most)
        return await self._store.trim_log(self.stream, before)

    async def read(self, from_seq: int = 0, limit: int = 500, wait: float = 0.0) -> list[ChangeEvent]:
        entries = await self._store.read(self.stream, from_seq, limit=limit, wait=wait)
        out = []
        for entry in entries:
            change = ChangeEvent.model_validate_json(entry.value)
            change.seq = entry.offset
            out.append(change)
        return out

    async def follow(self, from_seq: int = 0, poll: float = 15.0) -> AsyncIterator[list[ChangeEvent]]:
        """Every change from ``from_seq`` on, then new ones as they come (until the caller stops),
        in the batches the store reads them in (never empty), so that a reader behind a busy
        deployment catches up a batch at a time rather than a change at a time."""
        seq = from_seq
        while True:
            batch = await self.read(seq, wait=poll)
            if batch:
                seq = batch[-1].seq + 1
                yield batch
