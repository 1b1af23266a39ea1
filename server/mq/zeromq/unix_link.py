"""A client's line to the broker's Unix socket (see :mod:`.records` and :mod:`.unix_listener`).

It says hello on every connection and, like a DEALER socket, connects again by itself when the
line drops (the broker restarted at the same place): every 50 ms at first, then up to every
second. Messages sent while the line is down are lost, not queued: on a new connection the
client sends a heartbeat, whose answer carries a new session, and the client then sends again
whatever is unanswered (see ``ZeroMQQueue._resync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .packing import Frames
from .records import HELLO, REFUSED, Records

__all__ = ["UnixLink"]

log = logging.getLogger(__name__)

_FIRST_RETRY = 0.05
_LAST_RETRY = 1.0


class UnixLink:
    """The client's end: :meth:`connect` once (OSError if nobody listens at ``path``), then
    :meth:`send`; ``on_frames`` gets the broker's messages, ``on_reconnect`` is called after each
    new connection but the first, ``on_refused(reason)`` if the broker refuses this client (it
    does not try again)."""

    def __init__(
        self,
        path: str,
        ident: bytes,
        secret: bytes,
        *,
        on_frames: Callable[[list[Frames]], None],
        on_reconnect: Callable[[], None],
        on_refused: Callable[[str], None],
    ) -> None:
        self.path = path
        self._hello = [HELLO, ident, secret]
        self._on_frames = on_frames
        self._on_reconnect = on_reconnect
        self._on_refused = on_refused
        self._records: Records | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self.refused = ""
        """Why the broker refused this client ("" unless it did; it does not try again)."""

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, records = await loop.create_unix_connection(
            lambda: Records(self._on_messages, self._lost), self.path
        )
        if self._closed:
            records.close()
            return
        records.send(self._hello)
        self._records = records

    def send(self, frames: Frames) -> bool:
        records = self._records
        return records is not None and records.send(frames)

    def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            self._reconnecting = None
        if self._records is not None:
            self._records.close()
            self._records = None

    def _on_messages(self, batch: list[Frames]) -> None:
        if batch[0] and batch[0][0] == REFUSED:
            self.refused = batch[0][1].decode(errors="replace") if len(batch[0]) > 1 else "refused"
            hint = (
                " (is this worker's spec from another server? restart it from the server that serves "
                "its deployment)"
                if "secret" in self.refused
                else ""
            )
            log.error("the message broker at %s refused this client: %s%s", self.path, self.refused, hint)
            self.close()
            self._on_refused(self.refused)
            return
        self._on_frames(batch)

    def _lost(self, records: Records, exc: Exception | None) -> None:
        if records is not self._records:
            return
        self._records = None
        if not self._closed and not self.refused:
            log.info("lost the line to the message broker at %s; connecting again", self.path)
            self._reconnecting = asyncio.get_running_loop().create_task(
                self._reconnect(), name="llamactl-mq-unix-reconnect"
            )

    async def _reconnect(self) -> None:
        delay = _FIRST_RETRY
        while not self._closed:
            await asyncio.sleep(delay)
            with contextlib.suppress(OSError):
                await self.connect()
                if self._records is not None:
                    self._reconnecting = None
                    self._on_reconnect()
                    return
            delay = min(_LAST_RETRY, delay * 2)
