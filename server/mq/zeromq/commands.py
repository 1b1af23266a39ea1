"""What the embedded broker does with each command a client sends (the frames of :mod:`.wire`).

Every message from a client counts as a heartbeat; then its command goes to the part of the
broker that owns it: publishes to the journal (or, for work held in memory and results handed
over, past it), leases and credit to the dispatcher, stream reads to the streams. Frames a
confused client got wrong are skipped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from llamactl.server.mq.topics import is_work_topic, validate_topic

from . import wire
from .confirms import Publish, SettlingPublish
from .direct import DirectResults
from .dispatch import Dispatcher
from .journal import Journal
from .memory_work import MemoryWork
from .peers import Peers
from .streams import Streams

__all__ = ["Commands"]

Send = Callable[[bytes, list[bytes]], bool]


class Commands:
    """Applies batches of client frames (``[ident, cmd, ...]``) to the broker's parts. ``send``
    answers a client; ``on_bye`` is called for a client that says it is leaving."""

    def __init__(
        self,
        *,
        peers: Peers,
        dispatcher: Dispatcher,
        streams: Streams,
        journal: Journal,
        direct: DirectResults,
        memory: MemoryWork,
        send: Send,
        on_bye: Callable[[bytes], None],
    ) -> None:
        self._peers = peers
        self._dispatcher = dispatcher
        self._streams = streams
        self._journal = journal
        self._direct = direct
        self._memory = memory
        self._send = send
        self._on_bye = on_bye

    def apply(self, batch: list[list[bytes]], now: float, *, local: bool) -> None:
        """Apply ``batch``, heard at loop time ``now``; ``local``: from a client of this process
        (only those may hold work in the broker's memory)."""
        d, streams, submit, send = self._dispatcher, self._streams, self._journal.submit, self._send
        direct, subs = self._direct, self._dispatcher.subscriptions
        for frames in batch:
            if len(frames) < 2:
                continue
            ident, cmd = frames[0], frames[1]
            peer, known, was_vouched = self._peers.heard(ident, now)
            if known:
                subs.touch(ident)
            if was_vouched:
                subs.pause(ident, False)
            try:
                if cmd == wire.PUB:
                    _, _, req, topic_b, msg_id, key, headers, payload = frames
                    if (topic := self._topic(ident, req, topic_b, headers)) is None:
                        continue
                    ids = msg_id.decode(), key.decode()
                    submit(("pub", Publish(ident, req), topic, *ids, headers, payload, is_work_topic(topic)))
                elif cmd == wire.PUBMEM:
                    if local:  # only its own process restores such a message after a restart
                        self._memory.publish(ident, frames)
                    else:
                        send(ident, [wire.PUBNACK, frames[2], b"PUBMEM is only for in-process clients"])
                elif cmd == wire.ACKPUB:
                    _, _, req, lease_b, sub, dtopic_b, dseq, topic_b, msg_id, key, headers, payload = frames
                    if (topic := self._topic(ident, req, topic_b, headers)) is None:
                        continue
                    settling = SettlingPublish(
                        ident, req, lease_b.decode(), dtopic_b.decode(), _seq(wire.from_u64(dseq))
                    )
                    subs.credit_back(ident, wire.from_u32(sub), settling.lease)
                    ids = msg_id.decode(), key.decode()
                    if direct.takes(topic):
                        handed = ("pass", settling, topic, *ids, headers, payload)
                        if self._journal.idle:  # nothing published before it is still uncommitted
                            direct.hand_over(handed)
                        else:  # after the publishes before it (a task's events come first)
                            submit(handed)
                        continue
                    # The settlement and the publish share one commit; the delivery is settled in
                    # memory only once that commit holds (a failed one leaves the lease as it was).
                    submit(("settled", settling.topic, settling.seq))
                    submit(("pub", settling, topic, *ids, headers, payload, is_work_topic(topic)))
                elif cmd == wire.ACK:
                    _, _, req, lease, sub = frames
                    ok = d.ack(lease.decode(), ident, wire.from_u32(sub))
                    send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.CREDIT:
                    subs.credit(ident, wire.from_u32(frames[2]), wire.from_u32(frames[3]))
                elif cmd == wire.HB:
                    send(ident, [wire.HB, peer.session])
                elif cmd == wire.FETCH:
                    _, _, req, topic_b, from_seq, limit = frames
                    streams.fetch(ident, req, topic_b.decode(), wire.from_u64(from_seq), wire.from_u32(limit))
                elif cmd == wire.NACK:
                    _, _, req, lease, sub, delay = frames
                    ok = d.nack(lease.decode(), ident, wire.from_u32(sub), wire.from_f64(delay))
                    send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.EXTEND:
                    _, _, req, lease, seconds = frames
                    ok = d.extend(lease.decode(), _seconds(seconds))
                    send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.VOUCH:
                    if self._peers.vouch(frames[2], now):
                        subs.pause(frames[2], True)
                elif cmd == wire.DISCARD:
                    _, _, req, topic_b, msg_id, leased = frames
                    ok = d.discard(topic_b.decode(), msg_id.decode(), leased=bool(wire.from_u32(leased)))
                    send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.CONSUME:
                    _, _, sub, topic_b, lease_s, credit = frames
                    topic = topic_b.decode()
                    if is_work_topic(topic):
                        subs.consume(
                            ident,
                            wire.from_u32(sub),
                            topic,
                            _seconds(lease_s, positive=True),
                            wire.from_u32(credit),
                        )
                elif cmd == wire.CANCEL:
                    d.cancel(ident, wire.from_u32(frames[2]), [f.decode() for f in frames[3:]])
                elif cmd == wire.RETURN:
                    d.give_back(frames[2].decode())
                elif cmd == wire.UNFETCH:
                    streams.unpark((ident, frames[2]))
                elif cmd == wire.BYE:
                    self._on_bye(ident)
                    send(ident, [wire.OK, frames[2]])
            except (ValueError, IndexError, UnicodeDecodeError, struct.error):
                continue  # malformed frames from a confused client: ignore them

    def _topic(self, ident: bytes, req: bytes, raw: bytes, headers: bytes) -> str | None:
        """The topic a publish names; None once the publish is refused (``PUBNACK``) for it or for
        its headers (stored as they came, headers no consumer can read would break each one)."""
        topic = raw.decode()
        try:
            validate_topic(topic)
        except ValueError as exc:
            self._send(ident, [wire.PUBNACK, req, str(exc).encode()])
            return None
        try:
            wire.decode_headers(headers)
        except ValueError as exc:
            self._send(ident, [wire.PUBNACK, req, f"headers must be a JSON object: {exc}".encode()])
            return None
        return topic


def _seconds(raw: bytes, *, positive: bool = False) -> float:
    """The duration ``raw`` holds; ValueError for NaN or infinity (one such lease at the head of
    the expiry heap would stop every lease of the broker from expiring), or, with ``positive``,
    for one that is not above 0."""
    seconds = wire.from_f64(raw)
    if not math.isfinite(seconds) or (positive and seconds <= 0):
        raise ValueError(f"{seconds} seconds")
    return seconds


def _seq(seq: int) -> int:
    """``seq`` if a journal row can have it; ValueError beyond SQLite's largest integer."""
    if seq > wire.SEQ_MAX:
        raise ValueError(f"seq {seq} is beyond any message")
    return seq
