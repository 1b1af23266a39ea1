"""The embedded ZeroMQ broker: one ROUTER socket, a SQLite journal, work dispatch, stream reads.

It runs on the caller's asyncio loop (the server's). Clients (:class:`ZeroMQQueue`) connect a
DEALER to the ROUTER; the frames are described in :mod:`llamactl.server.mq.zeromq.wire`.

* ``PUB`` goes to the journal; ``PUBACK seq`` is sent only after the group commit that holds it.
  A duplicate ``msg_id`` (per topic) is absorbed and answered with the original seq.
* Work topics are dispatched by :class:`~llamactl.server.mq.zeromq.dispatch.Dispatcher` (credit, leases,
  per-key FIFO, redelivery, dead letter).
* Stream topics are read with ``FETCH topic from_seq`` (:mod:`~llamactl.server.mq.zeromq.streams`): a
  long poll answered from the journal or from the next commit. There is no PUB/SUB path at all,
  so slow joiners and high-water marks cannot lose anything: a subscriber gets exactly what it
  asks for, in order, at its own pace (one batch of at most 1000 in flight per subscriber).
* Liveness: every message from a client counts as a heartbeat (clients send ``HB`` every
  ``heartbeat_interval``). A client silent for ``liveness`` intervals is dead: its leases are
  released at once and its subscriptions and parked fetches are dropped. Should it come back
  (it was only paused), its ``HB`` replies carry a new epoch so that it registers again.
* Recovery: with a file journal, a restarted broker reloads pending work. Leased rows stay
  leased to their owner for one liveness period; if the owner (same routing id) does not come
  back, they are released.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import zmq

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.topics import dead_letter_topic, is_work_topic, validate_topic

from . import wire
from .client import ZeroMQQueue
from .dispatch import Dispatcher, Entry
from .journal import Journal, PendingRow
from .local import FrameHandler, LocalLink
from .streams import Streams

__all__ = ["ZeroMQBroker"]


class ZeroMQBroker:
    """The broker. ``start()`` binds and recovers the journal; ``close()`` stops it quickly.

    ``port`` 0 picks a free port. ``journal_path`` None keeps the journal in memory.
    ``pub_port`` is accepted for compatibility and unused (streams are served over the ROUTER).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pub_port: int = 0,
        journal_path: Path | None = None,
        max_attempts: int = 5,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
    ) -> None:
        self._host = host
        self._port = port
        self._journal_path = journal_path
        self._max_attempts = max_attempts
        self._hb = heartbeat_interval
        self._liveness = liveness
        self._epoch = os.urandom(8).hex().encode()
        self._endpoint = ""
        self._pump: wire.Pump | None = None
        self._journal: Journal | None = None
        self._dispatcher: Dispatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: dict[bytes, float] = {}
        self._rebirths: dict[bytes, bytes] = {}
        self._streams: Streams | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._next_peer_check = 0.0
        self._closed = False
        self._local: dict[bytes, LocalLink] = {}

    @property
    def client_config(self) -> dict[str, Any]:
        """What :func:`llamactl.server.mq.factory.connect_queue` needs to reach this broker (JSON-able)."""
        if not self._endpoint:
            raise MessageQueueError("the broker is not started: call start() first")
        return {
            "type": "zeromq",
            "router": self._endpoint,
            "heartbeat_interval": self._hb,
            "liveness": self._liveness,
        }

    def connect_local(self, *, publish_timeout: float = 10.0) -> ZeroMQQueue:
        """A client (not started) for code in this process and loop, linked without a socket."""
        return ZeroMQQueue(
            self._endpoint or "local",
            heartbeat_interval=self._hb,
            liveness=self._liveness,
            publish_timeout=publish_timeout,
            attach=self._attach_local,
        )

    def _attach_local(self, ident: bytes, to_client: FrameHandler) -> LocalLink:
        """Link an in-process client: return the link it sends on; replies go to ``to_client``."""
        if self._closed or self._pump is None:
            raise MessageQueueError("the broker is not running: start it before connecting")
        self._local[ident] = LocalLink(to_client)
        return LocalLink(lambda batch: self._on_frames([[ident, *frames] for frames in batch]))

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._journal = Journal(self._journal_path, self._on_results)
        self._dispatcher = Dispatcher(
            send=self._send,
            submit=self._journal.submit,
            on_dead=self._on_dead,
            max_attempts=self._max_attempts,
            clock=loop.time,
        )
        self._streams = Streams(self._send, self._journal.submit)
        pending = await self._journal.open()
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 0)  # replies are bounded by the protocol (credit, one batch)
        sock.setsockopt(zmq.RCVHWM, 0)
        try:
            sock.bind(f"tcp://{self._host}:{self._port or '*'}")
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            await self._journal.close()
            raise MessageQueueError(f"cannot bind the broker on {self._host}:{self._port}: {exc}") from exc
        self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._recover(pending)
        self._pump = wire.Pump(sock, self._on_frames)
        self._next_peer_check = loop.time() + self._hb / 2
        self._rearm()

    async def close(self) -> None:
        if self._closed or self._journal is None:
            self._closed = True
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._pump is not None:
            self._pump.close()
        for link in self._local.values():
            link.close()
        self._local.clear()
        await self._journal.close()

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self, rows: list[PendingRow]) -> None:
        assert self._dispatcher is not None and self._loop is not None
        now, wall = self._loop.time(), time.time()
        for topic, seq, msg_id, key, headers, payload, attempts, lease_id, owner, until, nb in rows:
            e = Entry(topic, seq, msg_id, key, headers, payload, attempts)
            if nb:
                e.not_before = now + max(0.0, nb - wall)
            if lease_id is not None and owner is not None and until is not None:
                e.lease_id, e.owner, e.lease_until = lease_id, owner, now + max(0.0, until - wall)
                self._peers.setdefault(owner, now)
            self._dispatcher.add(e)
        self._dispatcher.flush()

    # -- sockets ----------------------------------------------------------------------------------

    def _send(self, ident: bytes, frames: list[bytes]) -> bool:
        assert self._pump is not None
        local = self._local.get(ident)
        if local is not None:
            return local.send(frames)
        return self._pump.send([ident, *frames])

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        assert self._dispatcher is not None and self._loop is not None and self._journal is not None
        assert self._streams is not None
        d, streams, submit, now = self._dispatcher, self._streams, self._journal.submit, self._loop.time()
        for frames in batch:
            if len(frames) < 2:
                continue
            ident, cmd = frames[0], frames[1]
            if ident not in self._peers:
                self._peers[ident] = now
            else:
                self._peers[ident] = now
                d.touch(ident)
            try:
                if cmd == wire.PUB:
                    _, _, req, topic_b, msg_id, key, headers, payload = frames
                    topic = topic_b.decode()
                    try:
                        validate_topic(topic)
                    except ValueError as exc:
                        self._send(ident, [wire.PUBNACK, req, str(exc).encode()])
                        continue
                    op = ("pub", (ident, req), topic, msg_id.decode(), key.decode(), headers, payload)
                    submit((*op, is_work_topic(topic)))
                elif cmd == wire.ACKPUB:
                    _, _, req, lease, sub, topic_b, msg_id, key, headers, payload = frames
                    topic = topic_b.decode()
                    try:
                        validate_topic(topic)
                    except ValueError as exc:
                        self._send(ident, [wire.PUBNACK, req, str(exc).encode()])
                        continue
                    # The ack's "done" and the publish go into the same journal batch: one commit.
                    acked = d.ack(lease.decode(), ident, wire.from_u32(sub))
                    token = (ident, req, acked)
                    submit(
                        (
                            "pub",
                            token,
                            topic,
                            msg_id.decode(),
                            key.decode(),
                            headers,
                            payload,
                            is_work_topic(topic),
                        )
                    )
                elif cmd == wire.ACK:
                    _, _, req, lease, sub = frames
                    ok = d.ack(lease.decode(), ident, wire.from_u32(sub))
                    self._send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.CREDIT:
                    d.credit(ident, wire.from_u32(frames[2]), wire.from_u32(frames[3]))
                elif cmd == wire.HB:
                    self._send(ident, [wire.HB, self._rebirths.get(ident, self._epoch)])
                elif cmd == wire.FETCH:
                    _, _, req, topic_b, from_seq, limit = frames
                    streams.fetch(ident, req, topic_b.decode(), wire.from_u64(from_seq), wire.from_u32(limit))
                elif cmd == wire.NACK:
                    _, _, req, lease, sub, delay = frames
                    ok = d.nack(lease.decode(), ident, wire.from_u32(sub), wire.from_f64(delay))
                    self._send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.EXTEND:
                    _, _, req, lease, seconds = frames
                    ok = d.extend(lease.decode(), wire.from_f64(seconds))
                    self._send(ident, [wire.OK if ok else wire.STALE, req])
                elif cmd == wire.CONSUME:
                    _, _, sub, topic_b, lease_s, credit = frames
                    topic = topic_b.decode()
                    if is_work_topic(topic):
                        d.consume(
                            ident, wire.from_u32(sub), topic, wire.from_f64(lease_s), wire.from_u32(credit)
                        )
                elif cmd == wire.CANCEL:
                    d.cancel(ident, wire.from_u32(frames[2]), [f.decode() for f in frames[3:]])
                elif cmd == wire.RETURN:
                    d.give_back(frames[2].decode())
                elif cmd == wire.UNFETCH:
                    streams.unpark((ident, frames[2]))
                elif cmd == wire.BYE:
                    self._drop_peer(ident, "consumer closed")
                    self._send(ident, [wire.OK, frames[2]])
            except (ValueError, IndexError, UnicodeDecodeError):
                continue  # malformed frames from a confused client: ignore them
        d.flush()
        self._rearm()

    # -- journal results --------------------------------------------------------------------------

    def _on_results(self, results: list[tuple[Any, ...]]) -> None:
        if self._closed:
            return
        assert self._dispatcher is not None and self._streams is not None
        streams = self._streams
        for res in results:
            kind = res[0]
            if kind == "pub":
                _, token, topic, seq, dup, msg_id, key, headers, payload = res
                if token is not None:
                    if len(token) == 3 and not token[2]:  # ack-and-publish whose lease had moved on
                        self._send(token[0], [wire.STALE, token[1]])
                    else:
                        self._send(token[0], [wire.PUBACK, token[1], wire.u64(seq)])
                if dup:
                    continue
                if is_work_topic(topic):
                    self._dispatcher.add(Entry(topic, seq, msg_id, key, headers, payload))
                else:
                    streams.committed(topic, (seq, msg_id, key, headers, payload))
            elif kind == "read":
                streams.on_read(res[1], res[3])
            elif kind == "fail":
                token = res[1]
                if isinstance(token, tuple) and len(token) in (2, 3):
                    self._send(token[0], [wire.PUBNACK, token[1], str(res[2]).encode()])
                elif isinstance(token, tuple):
                    streams.on_read_failed(token)
        streams.flush()
        self._dispatcher.flush()
        self._rearm()

    def _on_dead(self, e: Entry, reason: str) -> None:
        assert self._journal is not None
        headers = wire.decode_headers(e.headers)
        headers["x-dead-reason"] = reason
        headers["x-attempts"] = str(e.attempts)
        dlq = dead_letter_topic(e.topic)
        self._journal.submit(
            ("pub", None, dlq, e.msg_id, e.key, wire.encode_headers(headers), e.payload, True)
        )
        self._journal.submit(("done", e.topic, e.seq))

    # -- liveness and timers ----------------------------------------------------------------------

    def _drop_peer(self, ident: bytes, reason: str) -> None:
        assert self._dispatcher is not None and self._streams is not None
        self._peers.pop(ident, None)
        self._dispatcher.drop_peer(ident, reason)
        self._streams.drop_peer(ident)

    def _rearm(self) -> None:
        assert self._dispatcher is not None and self._loop is not None
        if self._closed:
            return
        when = self._next_peer_check
        nxt = self._dispatcher.next_deadline()
        if nxt is not None and nxt < when:
            when = nxt
        if self._timer is not None:
            if when >= self._timer_when - 0.0005:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        assert self._dispatcher is not None and self._loop is not None
        self._timer = None
        if self._closed:
            return
        now = self._loop.time()
        if now >= self._next_peer_check:
            self._next_peer_check = now + self._hb / 2
            limit = now - self._hb * self._liveness
            for ident in [p for p, seen in self._peers.items() if seen < limit]:
                self._drop_peer(ident, "consumer lost")
                # if it was only paused, a new epoch in its next HB reply makes it register again
                self._rebirths[ident] = self._epoch + b"." + os.urandom(4).hex().encode()
        self._dispatcher.tick()
        self._rearm()
