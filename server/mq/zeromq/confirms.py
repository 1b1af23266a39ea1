"""Who waits for the journal's commit of a publish: the broker answers them once it holds."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Publish", "SettlingPublish"]


@dataclass(slots=True, frozen=True)
class Publish:
    """Who waits for a publish's confirm."""

    ident: bytes
    req: bytes


@dataclass(slots=True, frozen=True)
class SettlingPublish:
    """Who waits for an ``ACKPUB``, and which delivered message it settles once committed."""

    ident: bytes
    req: bytes
    lease: str
    topic: str
    seq: int
