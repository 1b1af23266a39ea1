"""The broker's clients as it hears them: when each was last heard from, the session id its
heartbeat replies carry, and whether a side line vouches for it while its loop is blocked.

A client silent for ``patience`` seconds is gone; nothing is kept of it. Should it come back (it
was only paused), it is a new peer with a new session, so it knows to register again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["Peer", "Peers"]


@dataclass(slots=True)
class Peer:
    seen: float
    session: bytes
    vouched: bool = False
    """Its loop is blocked and its side line says it is alive: nothing new goes to it."""


class Peers:
    def __init__(self, epoch: bytes, patience: float) -> None:
        self._epoch = epoch
        self._patience = patience
        self._peers: dict[bytes, Peer] = {}
        self._sessions = itertools.count(1)

    def __len__(self) -> int:
        return len(self._peers)

    def known(self, ident: bytes, now: float) -> Peer:
        """The peer (a new one, with a new session, if it was unknown), marked as heard now."""
        peer = self._peers.get(ident)
        if peer is None:
            session = self._epoch + b"." + str(next(self._sessions)).encode()
            peer = self._peers[ident] = Peer(now, session)
        peer.seen = now
        return peer

    def heard(self, ident: bytes, now: float) -> tuple[Peer, bool, bool]:
        """A frame came from ``ident``: ``(peer, was_known, was_vouched_for)``."""
        peer = self._peers.get(ident)
        if peer is None:
            return self.known(ident, now), False, False
        peer.seen = now
        vouched, peer.vouched = peer.vouched, False  # it answers for itself again
        return peer, True, vouched

    def vouch(self, ident: bytes, now: float) -> bool:
        """A side line vouches for ``ident``; True when it was not vouched for already."""
        peer = self._peers.get(ident)
        if peer is None:
            return False
        peer.seen = now
        newly, peer.vouched = not peer.vouched, True
        return newly

    def forget(self, ident: bytes) -> None:
        self._peers.pop(ident, None)

    def excuse(self, now: float, lag: float) -> None:
        """Our own loop was blocked ``lag`` seconds: nobody could be heard meanwhile."""
        for peer in self._peers.values():
            peer.seen = max(peer.seen, now - lag)

    def silent(self, now: float) -> list[bytes]:
        """The peers not heard from for longer than the patience."""
        limit = now - self._patience
        return [ident for ident, peer in self._peers.items() if peer.seen < limit]
