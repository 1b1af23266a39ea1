"""Stream-topic reads of the broker: ``FETCH`` answered from the journal or parked (long poll).

A ``FETCH topic from_seq limit`` is answered at once with up to ``limit`` messages from
``from_seq`` on when the journal holds any; otherwise it is parked and answered straight from the
commit that first brings a message with ``seq >= from_seq``. Journal results arrive in op order,
so a fetch that found nothing is parked before any later commit of its topic is seen: nothing
falls between the read and the parking, and every answer starts exactly at ``from_seq``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llamactl.server.mq.topics import is_stream_topic

from . import wire

__all__ = ["Streams"]

Msg = tuple[int, bytes, bytes, bytes, bytes]  # seq, msg_id, key, headers, payload
Waiter = tuple[bytes, bytes]  # client routing id, request id

_FETCH_MAX = 1000
_KNOWN_ENDS = 4096
"""Stream topics whose committed end is remembered (a fetch of another one reads the journal)."""


class Streams:
    """Parked fetches and the committed end of each stream topic seen so far."""

    def __init__(self, send: Callable[[bytes, list[bytes]], bool], submit: Callable[[tuple[Any, ...]], None]):
        self._send = send
        self._submit = submit
        self._next_seq: OrderedDict[str, int] = OrderedDict()
        self._parked: dict[str, dict[Waiter, tuple[int, int]]] = {}
        self._parked_topic: dict[Waiter, str] = {}
        self._fresh: dict[str, list[Msg]] = {}

    def fetch(self, ident: bytes, req: bytes, topic: str, from_seq: int, limit: int) -> None:
        limit = max(1, min(limit, _FETCH_MAX))
        # Beyond any seq the journal can hold (and can be asked for): it waits, as past the end.
        from_seq = min(from_seq, wire.SEQ_MAX)
        if not is_stream_topic(topic):
            self._answer(ident, req, [])
            return
        known = self._next_seq.get(topic)
        if known is not None and from_seq >= known:
            self._park(ident, req, topic, from_seq, limit)
        else:
            self._submit(("read", (ident, req, topic, from_seq, limit), topic, from_seq, limit))

    def on_read(self, token: tuple[bytes, bytes, str, int, int], rows: list[Any]) -> None:
        ident, req, topic, from_seq, limit = token
        if rows:
            self._answer(ident, req, [(s, m.encode(), k.encode(), h, p) for s, m, k, h, p in rows])
        else:
            self._park(ident, req, topic, from_seq, limit)

    def on_read_failed(self, token: tuple[bytes, bytes, str, int, int]) -> None:
        self._park(*token)  # try again with the next commit of the topic

    def committed(self, topic: str, msg: tuple[int, str, str, bytes, bytes]) -> None:
        """A new message ``(seq, msg_id, key, headers, payload)`` was committed (in commit order)."""
        seq, msg_id, key, headers, payload = msg
        self._next_seq[topic] = seq + 1
        self._next_seq.move_to_end(topic)
        if len(self._next_seq) > _KNOWN_ENDS:
            self._next_seq.popitem(last=False)
        if topic in self._parked:
            self._fresh.setdefault(topic, []).append((seq, msg_id.encode(), key.encode(), headers, payload))

    def flush(self) -> None:
        """Answer the parked fetches that the commits since the last flush satisfy."""
        fresh, self._fresh = self._fresh, {}
        for topic, msgs in fresh.items():
            for waiter, (from_seq, limit) in list(self._parked.get(topic, {}).items()):
                batch = [m for m in msgs if m[0] >= from_seq][:limit]
                if batch:
                    self.unpark(waiter)
                    self._answer(waiter[0], waiter[1], batch)

    def unpark(self, waiter: Waiter) -> None:
        topic = self._parked_topic.pop(waiter, None)
        if topic is not None:
            waiting = self._parked[topic]
            waiting.pop(waiter, None)
            if not waiting:
                del self._parked[topic]

    def drop_peer(self, ident: bytes) -> None:
        for waiter in [w for w in self._parked_topic if w[0] == ident]:
            self.unpark(waiter)

    def forget_ends(self) -> None:
        """Forget every committed end (after the journal pruned: a topic may start again at 0)."""
        self._next_seq.clear()

    def _answer(self, ident: bytes, req: bytes, msgs: list[Msg]) -> None:
        frames = [wire.BATCH, req]
        for seq, msg_id, key, headers, payload in msgs:
            frames += (wire.u64(seq), msg_id, key, headers, payload)
        self._send(ident, frames)

    def _park(self, ident: bytes, req: bytes, topic: str, from_seq: int, limit: int) -> None:
        self._parked.setdefault(topic, {})[(ident, req)] = (from_seq, limit)
        self._parked_topic[(ident, req)] = topic
