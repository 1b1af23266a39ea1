"""How the broker reaches each of its clients: one place that knows the three ways.

* a client in the broker's own process and loop: a :class:`~.local.LocalLink`, no socket;
* a client on the broker's machine: its connection to the Unix socket (:mod:`.unix_listener`);
* any other: the ROUTER socket's :class:`~.pump.Pump`, by routing id.

Confirms to a client over a socket wait for its next message (:mod:`.held`); an in-process
client gets them at once, as it costs no wake-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .held import HeldConfirms
from .local import FrameHandler, LocalLink
from .packing import Frames
from .pump import Pump
from .records import Records

__all__ = ["PeerLinks"]


class PeerLinks:
    """The broker's links to its clients. ``on_gone(ident)`` is called when a Unix connection
    ends and its client is therefore gone (not when a newer connection replaced it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pump: Pump, on_gone: Callable[[bytes], None]) -> None:
        self._pump = pump
        self._on_gone = on_gone
        self._local: dict[bytes, LocalLink] = {}
        self._unix: dict[bytes, Records] = {}
        self._held = HeldConfirms(loop, self._send_routed, self._send_routed_batch)

    def send(self, ident: bytes, frames: Frames) -> bool:
        """Send to ``ident`` now (with what confirms wait for it). False: it is unreachable."""
        local = self._local.get(ident)
        if local is not None:
            return local.send(frames)
        return self._held.send(ident, frames)

    def confirm(self, ident: bytes, frames: Frames) -> bool:
        """Send a confirm with the peer's next message (see :mod:`.held`)."""
        local = self._local.get(ident)
        if local is not None:
            return local.send(frames)
        return self._held.hold(ident, frames)

    def attach_local(self, ident: bytes, to_client: FrameHandler, from_client: FrameHandler) -> LocalLink:
        """Link an in-process client: replies go to ``to_client``; the link returned is the one it
        sends on, whose batches go to ``from_client``."""
        self._local[ident] = LocalLink(to_client)
        return LocalLink(from_client)

    def attach_unix(self, ident: bytes, link: Records) -> None:
        """A client said hello on the Unix socket. If it had a connection still open, whatever
        was under way on that one is void: it is a peer gone, and comes back as a new one."""
        old = self._unix.get(ident)
        if old is not None:
            self.detach_unix(ident, old)
            old.close()
        self._unix[ident] = link

    def detach_unix(self, ident: bytes, link: Records) -> None:
        if self._unix.get(ident) is not link:
            return  # replaced by a newer connection of the same client
        del self._unix[ident]
        self._on_gone(ident)

    def forget(self, ident: bytes) -> None:
        """``ident`` is gone: drop the confirms that wait for it."""
        self._held.forget(ident)

    def close(self) -> None:
        """Send the confirms still held, then let go of every link (the sockets are closed by
        their owners: the pump's and the listener's)."""
        self._held.release_all()
        self._unix.clear()
        for link in self._local.values():
            link.close()
        self._local.clear()

    def _send_routed(self, ident: bytes, frames: Frames) -> bool:
        link = self._unix.get(ident)
        if link is not None:
            return link.send(frames)
        return self._pump.send_batch(ident, [frames])

    def _send_routed_batch(self, ident: bytes, messages: list[Frames]) -> bool:
        link = self._unix.get(ident)
        if link is not None:
            return link.send_batch(messages)
        return self._pump.send_batch(ident, messages)
