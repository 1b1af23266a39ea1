"""The broker's Unix socket: where workers on its own machine connect (see :mod:`.records`).

Who may connect: the socket lives in a folder only the server's user can open, and a connection
counts only once its first message, ``HELLO ident secret``, carries the secret the broker's
clients hold (the client key of its CURVE keys, which its workers get in their spec). Anything
else is answered ``REFUSED reason`` and hung up on, as is a connection silent for
:data:`HELLO_WITHIN` seconds.

A client is known by the ``ident`` of its hello, as on the ROUTER socket. A new connection under
the ident of a live one replaces it (``on_detach`` for the old one first), and a connection that
ends is a client gone at once: a Unix socket does not break while both processes live, so its end
means the client's process ended or hung up, and the broker need not wait out its liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path

from llamactl.server.errors import MessageQueueError

from .packing import Frames
from .records import HELLO, REFUSED, Records

__all__ = ["HELLO_WITHIN", "UnixListener"]

log = logging.getLogger(__name__)

HELLO_WITHIN = 5.0
"""Seconds a new connection has to say who it is."""


class UnixListener:
    """Accepts clients at ``path``: ``on_attach(ident, link)`` when one has said hello,
    ``on_frames(batch)`` with what it sends (each message with its ident first, as the ROUTER
    socket gives them), ``on_detach(ident, link)`` when its connection ends."""

    def __init__(
        self,
        path: Path,
        secret: bytes,
        *,
        on_attach: Callable[[bytes, Records], None],
        on_frames: Callable[[list[Frames]], None],
        on_detach: Callable[[bytes, Records], None],
    ) -> None:
        self.path = path
        self._secret = secret
        self._on_attach = on_attach
        self._on_frames = on_frames
        self._on_detach = on_detach
        self._server: asyncio.AbstractServer | None = None
        self._links: set[Records] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_unix_server(self._accept, str(self.path))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            self.close()
            raise MessageQueueError(
                f"cannot listen for local workers on the Unix socket {self.path}: {exc} "
                "(a path must be shorter than 108 bytes, in a folder the server can write)"
            ) from exc

    def _accept(self) -> Records:
        timer: asyncio.TimerHandle | None = None
        ident = b""

        def hello(messages: list[Frames]) -> None:
            nonlocal ident
            first, rest = messages[0], messages[1:]
            if len(first) != 3 or first[0] != HELLO or not first[1]:
                refuse(b"the first message must be HELLO ident secret")
                return
            if not hmac.compare_digest(first[2], self._secret):
                refuse(b"wrong secret: this client's keys are not this broker's")
                return
            if timer is not None:
                timer.cancel()
            ident = first[1]
            link.on_messages = lambda batch: self._on_frames([[ident, *frames] for frames in batch])
            self._on_attach(ident, link)
            if rest:
                link.on_messages(rest)

        def refuse(reason: bytes) -> None:
            log.warning("refused a connection to the broker's Unix socket: %s", reason.decode())
            link.send([REFUSED, reason])
            link.close()

        def lost(records: Records, exc: Exception | None) -> None:
            if timer is not None:
                timer.cancel()
            self._links.discard(records)
            if ident:
                self._on_detach(ident, records)

        link = Records(hello, lost)
        timer = asyncio.get_running_loop().call_later(HELLO_WITHIN, refuse, b"no hello in time")
        self._links.add(link)
        return link

    def close(self) -> None:
        """Stop listening, hang up on every client and remove the socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close()
        self._links.clear()
        with contextlib.suppress(OSError):
            self.path.unlink()
