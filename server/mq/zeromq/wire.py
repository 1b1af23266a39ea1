"""Frames on the wire between :class:`ZeroMQQueue` clients (DEALER) and the broker (ROUTER).

Every message is a multipart message whose first frame is the command; the broker's ROUTER
also sees the client's routing id in front of it. Integers are big-endian (``u64`` for
request ids and seqs, ``u32`` for subscription ids, credits and attempts), durations are
``f64`` seconds, ``headers`` is compact JSON of a ``{str: str}`` object or empty for none.

Client -> broker::

    PUB     req topic msg_id key headers payload     -> PUBACK req seq | PUBNACK req reason
    PUBMEM  req topic msg_id key payload attempts    -> PUBACK req seq | PUBNACK req reason
                                                     a work message held in memory, not journaled:
                                                     only from a client in the broker's process
                                                     (see ``publish_restorable``)
    CONSUME sub topic lease credit                   -> DELIVER ... (as credit allows)
    CREDIT  sub n                                    grant n more deliveries
    CANCEL  sub lease_id*                            stop; the listed (never handed out) leases
                                                     go back without counting an attempt
    RETURN  lease_id                                 same, for a delivery of an unknown sub
    ACK     req lease_id sub                         -> OK req | STALE req   (sub: credit +1,
    NACK    req lease_id sub delay                   -> OK req | STALE req    u32 0 = none)
    ACKPUB  req lease_id sub dtopic dseq             -> PUBACK req seq | STALE req | PUBNACK req reason
            topic msg_id key headers payload         publish, and settle the delivered message
                                                     (dtopic, dseq) in the same commit, even if the
                                                     lease moved on; STALE: it was settled before
    EXTEND  req lease_id seconds                     -> OK req | STALE req
    DISCARD req topic msg_id leased(u32)             -> OK req | STALE req   remove a pending work
                                                     message (leased 1: even one under lease)
    FETCH   req topic from_seq limit                 -> BATCH req (seq msg_id key headers payload)*
                                                     answered at once if seq >= from_seq exists,
                                                     else parked until one is published
    UNFETCH req                                      forget a parked FETCH
    VOUCH   ident                                    from a client's side line: the client ident is
                                                     alive but its loop is blocked (no reply)
    HB                                               -> HB session (the broker's start id and
                                                     this client's number, new whenever the
                                                     broker has forgotten the client)
    BYE     req                                      release everything of this client -> OK req

Broker -> client::

    DELIVER sub lease_id attempt topic seq msg_id key headers payload

A client that sees the ``session`` change in a ``HB`` reply knows the broker restarted or declared
it dead: it sends its ``CONSUME`` s, parked ``FETCH`` es and unconfirmed requests again (same ids,
so nothing doubles; a resent settle carries sub 0, so no credit is given twice).

On the socket the frames of a message travel packed into one ZeroMQ frame (:func:`pack`), after
the routing id on the broker's side: each ZeroMQ frame costs a send or receive call that drops
and takes the GIL, about 2 µs apiece here, and a ``DELIVER`` or ``ACKPUB`` has ten or more. The
packed frame starts with :data:`WIRE_VERSION`; a message in another layout (a client or broker
of another llamactl version) is dropped with a warning.

:class:`Pump` is the socket driver both sides use: it watches the socket's edge-triggered FD
with ``loop.add_reader`` and drains everything readable with NOBLOCK in one go, so there is no
future or timer per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import zmq

__all__ = [
    "ACK",
    "BATCH",
    "BYE",
    "CANCEL",
    "CONSUME",
    "CREDIT",
    "DELIVER",
    "DISCARD",
    "EXTEND",
    "FETCH",
    "HB",
    "NACK",
    "OK",
    "PUB",
    "PUBACK",
    "PUBMEM",
    "PUBNACK",
    "RETURN",
    "STALE",
    "UNFETCH",
    "VOUCH",
    "WIRE_VERSION",
    "Pump",
    "decode_headers",
    "encode_headers",
    "f64",
    "from_f64",
    "from_u32",
    "from_u64",
    "pack",
    "u32",
    "u64",
    "unpack",
    "unpack_message",
]

PUB = b"PUB"
PUBACK = b"PUBACK"
PUBMEM = b"PUBMEM"
PUBNACK = b"PUBNACK"
CONSUME = b"CONSUME"
CREDIT = b"CREDIT"
CANCEL = b"CANCEL"
RETURN = b"RETURN"
DELIVER = b"DELIVER"
ACK = b"ACK"
ACKPUB = b"ACKPUB"
NACK = b"NACK"
EXTEND = b"EXTEND"
OK = b"OK"
STALE = b"STALE"
FETCH = b"FETCH"
UNFETCH = b"UNFETCH"
BATCH = b"BATCH"
HB = b"HB"
BYE = b"BYE"
DISCARD = b"DISCARD"
VOUCH = b"VOUCH"

WIRE_VERSION = 1
"""The first byte of every packed frame; a peer that sends another is of another llamactl."""

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")

u64 = _U64.pack
u32 = _U32.pack
f64 = _F64.pack


def from_u64(b: bytes) -> int:
    return int(_U64.unpack(b)[0])


def from_u32(b: bytes) -> int:
    return int(_U32.unpack(b)[0])


def from_f64(b: bytes) -> float:
    return float(_F64.unpack(b)[0])


def encode_headers(headers: Mapping[str, str] | None) -> bytes:
    if not headers:
        return b""
    return json.dumps(dict(headers), separators=(",", ":")).encode()


_HEAD = struct.Struct(">BI")  # version, number of frames
_LENGTHS = [struct.Struct(f">{n}I") for n in range(33)]  # the usual counts, ready made


def _lengths(n: int) -> struct.Struct:
    return _LENGTHS[n] if n < len(_LENGTHS) else struct.Struct(f">{n}I")


def pack(frames: Sequence[bytes], start: int = 0) -> bytes:
    """``frames[start:]`` as one frame: the version, the count, each length, then the bytes."""
    parts = frames[start:] if start else frames
    n = len(parts)
    return b"".join((_HEAD.pack(WIRE_VERSION, n), _lengths(n).pack(*map(len, parts)), *parts))


def unpack(data: bytes) -> list[bytes]:
    """The frames :func:`pack` packed into ``data``. ValueError if it is not such a frame."""
    try:
        version, n = _HEAD.unpack_from(data)
        if version != WIRE_VERSION:
            raise ValueError(f"wire version {version}, not {WIRE_VERSION}")
        pos = _HEAD.size + 4 * n
        lengths = _lengths(n).unpack_from(data, _HEAD.size)
    except struct.error as exc:
        raise ValueError(f"not a packed frame: {exc}") from None
    frames = []
    for length in lengths:
        end = pos + length
        frames.append(data[pos:end])
        pos = end
    if pos != len(data):
        raise ValueError(f"a packed frame of {len(data)} bytes whose frames take {pos}")
    return frames


def unpack_message(parts: list[bytes], *, routed: bool) -> list[bytes]:
    """The frames of a message as a socket received it: one packed frame, after the routing id
    on a ROUTER (``routed``), which stays first. ValueError for any other layout."""
    if len(parts) != (2 if routed else 1):
        expected = "a routing id and one packed frame" if routed else "one packed frame"
        raise ValueError(f"{len(parts)} ZeroMQ frames, not {expected}")
    frames = unpack(parts[-1])
    if routed:
        frames.insert(0, parts[0])
    return frames


def decode_headers(raw: bytes) -> dict[str, str]:
    if not raw:
        return {}
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()}


Frames = list[bytes]

# pyzmq's Python-level send/recv_multipart wrap every frame in enum flag arithmetic, which
# costs more than the send itself; call the backend socket's methods with plain int flags.
_BaseSocket: Any = zmq.Socket.__mro__[1]
_send: Any = getattr(_BaseSocket, "send", zmq.Socket.send)
_recv: Any = getattr(_BaseSocket, "recv", zmq.Socket.recv)
_get: Any = getattr(_BaseSocket, "get", zmq.Socket.get)
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class Pump:
    """Drive one zmq socket from an asyncio loop without a future per message.

    ZeroMQ's FD is edge-triggered: it signals "look at ZMQ_EVENTS", and any zmq call on the
    socket (a send included) may consume that signal. So after every send we look at
    ZMQ_EVENTS ourselves and schedule a drain if input is waiting, instead of trusting the FD.

    Messages go out packed (:func:`pack`); on a ROUTER socket the first frame, the peer's
    routing id, stays a ZeroMQ frame of its own, as ZeroMQ routes by it.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        handler: Callable[[list[Frames]], None],
        *,
        batch: int = 4096,
    ) -> None:
        self.sock = sock
        self._handler = handler
        self._batch = batch
        self._routed = int(sock.getsockopt(zmq.TYPE)) == zmq.ROUTER
        self._loop = asyncio.get_running_loop()
        self._fd = int(sock.getsockopt(zmq.FD))
        self._scheduled = False
        self._closed = False
        self._warned = False
        self._loop.add_reader(self._fd, self._drain)
        self.kick()

    def kick(self) -> None:
        """Schedule a drain if messages wait (call after any send)."""
        if self._scheduled or self._closed:
            return
        if _get(self.sock, _EVENTS) & _POLLIN:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        sock = self.sock
        batch: list[Frames] = []
        received = 0
        # Asking ZMQ_EVENTS before each message is cheaper than ending on zmq.Again (an
        # exception per drain), and it leaves the FD armed for the next message.
        while _get(sock, _EVENTS) & _POLLIN and received < self._batch:
            received += 1
            frame = _recv(sock, _NOBLOCK, copy=False)
            parts = [frame.bytes]
            while frame.more:
                frame = _recv(sock, _NOBLOCK, copy=False)
                parts.append(frame.bytes)
            frames = self._unpacked(parts)
            if frames is not None:
                batch.append(frames)
        if batch:
            self._handler(batch)
        if received >= self._batch:
            self.kick()  # stopped at the batch limit with messages still waiting

    def _unpacked(self, parts: Frames) -> Frames | None:
        try:
            return unpack_message(parts, routed=self._routed)
        except ValueError as exc:
            if not self._warned:  # once per socket: a peer of another version sends many
                self._warned = True
                log.warning(
                    "dropped a message that is not in llamactl's wire format (%s): is a client or "
                    "broker of another llamactl version connected? Run one version everywhere.",
                    exc,
                )
            return None

    def send(self, frames: Frames) -> bool:
        """Send without blocking; False if the peer is unknown/unreachable or its pipe is full.
        On a ROUTER socket ``frames[0]`` is the peer's routing id."""
        if self._closed:
            return False
        sock = self.sock
        try:
            if self._routed:
                # both frames of the message are queued atomically once the first one is in
                _send(sock, frames[0], _NOBLOCK_MORE)
                _send(sock, pack(frames, 1), _NOBLOCK)
            else:
                _send(sock, pack(frames), _NOBLOCK)
        except zmq.ZMQError:  # Again (pipe full) or EHOSTUNREACH (ROUTER_MANDATORY, peer gone)
            return False
        self.kick()
        return True

    def close(self) -> None:
        """Stop watching and close the socket at once (LINGER 0)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError, ValueError):  # the loop may be closed already
            self._loop.remove_reader(self._fd)
        self.sock.close(linger=0)
