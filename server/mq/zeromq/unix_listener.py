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
        caller = _Caller(self._secret, self._on_attach, self._on_frames, self._gone)
        self._links.add(caller.link)
        return caller.link

    def _gone(self, ident: bytes, link: Records) -> None:
        self._links.discard(link)
        if ident:
            self._on_detach(ident, link)

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


class _Caller:
    """One connection to the listener: a stranger until its hello, then a client."""

    def __init__(
        self,
        secret: bytes,
        on_attach: Callable[[bytes, Records], None],
        on_frames: Callable[[list[Frames]], None],
        on_gone: Callable[[bytes, Records], None],
    ) -> None:
        self._secret = secret
        self._on_attach = on_attach
        self._on_frames = on_frames
        self._on_gone = on_gone
        self.ident = b""
        self.link = Records(self._hello, self._lost)
        self._timer = asyncio.get_running_loop().call_later(HELLO_WITHIN, self._refuse, b"no hello in time")

    def _hello(self, messages: list[Frames]) -> None:
        first, rest = messages[0], messages[1:]
        if len(first) != 3 or first[0] != HELLO or not first[1]:
            self._refuse(b"the first message must be HELLO ident secret")
            return
        if not hmac.compare_digest(first[2], self._secret):
            self._refuse(b"wrong secret: this client's keys are not this broker's")
            return
        self._timer.cancel()
        self.ident = first[1]
        self.link.on_messages = self._client
        self._on_attach(self.ident, self.link)
        if rest:
            self._client(rest)

    def _client(self, batch: list[Frames]) -> None:
        ident = self.ident
        self._on_frames([[ident, *frames] for frames in batch])

    def _refuse(self, reason: bytes) -> None:
        log.warning("refused a connection to the broker's Unix socket: %s", reason.decode())
        self.link.send([REFUSED, reason])
        self.link.close()

    def _lost(self, link: Records, exc: Exception | None) -> None:
        self._timer.cancel()
        self._on_gone(self.ident, link)
