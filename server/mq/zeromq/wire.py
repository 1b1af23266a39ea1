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

On the socket these frames travel packed, several messages to one peer in one ZeroMQ frame
(:mod:`.packing`), which :class:`.pump.Pump` sends and receives. Clients on the broker's machine
send the same packed messages over its Unix socket, each preceded by its length
(:mod:`.records`); their first message there is ``HELLO ident secret`` (:mod:`.unix_listener`).

"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

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
    "SEQ_MAX",
    "STALE",
    "UNFETCH",
    "VOUCH",
    "decode_headers",
    "encode_headers",
    "f64",
    "from_f64",
    "from_u32",
    "from_u64",
    "u32",
    "u64",
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


SEQ_MAX = (1 << 63) - 1
"""SQLite's largest integer: no journaled seq is beyond it, though a ``u64`` may be."""

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


def decode_headers(raw: bytes) -> dict[str, str]:
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"headers must be a JSON object, not {type(value).__name__}")  # noqa: TRY004  (malformed input, as the JSON errors are)
    return {str(k): str(v) for k, v in value.items()}
