"""How a protocol message travels: its frames packed into one ZeroMQ frame.

Why: every ZeroMQ frame costs a send or receive call that drops and retakes the GIL (about 2 µs
apiece here, in place), and a ``DELIVER`` or an ``ACKPUB`` has ten and twelve fields.

Layout (integers big-endian): the version byte :data:`WIRE_VERSION`, a ``u32`` count of frames,
a ``u32`` length per frame, then the frames' bytes in order. Anything else (another llamactl
version's layout, a forged frame) is refused with ValueError. A ZeroMQ message may carry several
packed frames, each a message of its own: what a sender batched for one peer (``Pump.send_batch``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["WIRE_VERSION", "pack", "unpack", "unpack_parts"]

WIRE_VERSION = 1
"""The first byte of every packed frame; a peer that sends another is of another llamactl."""

_HEAD = struct.Struct(">BI")  # the version, the number of frames
_LENGTHS = [struct.Struct(f">{n}I") for n in range(33)]  # the usual counts, ready made

Frames = list[bytes]


def _lengths(n: int) -> struct.Struct:
    return _LENGTHS[n] if n < len(_LENGTHS) else struct.Struct(f">{n}I")


def pack(frames: Sequence[bytes], start: int = 0) -> bytes:
    """``frames[start:]`` as one frame (``start`` leaves out the routing id, which a ROUTER
    socket sends in a ZeroMQ frame of its own)."""
    parts = frames[start:] if start else frames
    n = len(parts)
    return b"".join((_HEAD.pack(WIRE_VERSION, n), _lengths(n).pack(*map(len, parts)), *parts))


def unpack(data: bytes) -> Frames:
    """The frames :func:`pack` packed into ``data``. ValueError if it is not such a frame."""
    try:
        version, n = _HEAD.unpack_from(data)
        if version != WIRE_VERSION:
            raise ValueError(f"wire version {version}, not {WIRE_VERSION}")
        lengths = _lengths(n).unpack_from(data, _HEAD.size)
    except struct.error as exc:
        raise ValueError(f"not a packed frame: {exc}") from None
    pos = _HEAD.size + 4 * n
    frames: Frames = []
    for length in lengths:
        end = pos + length
        frames.append(data[pos:end])
        pos = end
    if pos != len(data):
        raise ValueError(f"a packed frame of {len(data)} bytes whose frames take {pos}")
    return frames


def unpack_parts(parts: Sequence[bytes], *, routed: bool) -> list[Frames]:
    """The messages of a ZeroMQ message as a socket received it: one packed frame per message
    (several when a sender batched them, see ``Pump.send_batch``), after the routing id on a
    ROUTER (``routed``), which goes first in each. ValueError for any other layout."""
    packed = parts[1:] if routed else parts
    if not packed:
        expected = "a routing id and packed frames" if routed else "packed frames"
        raise ValueError(f"{len(parts)} ZeroMQ frames, not {expected}")
    messages = [unpack(frame) for frame in packed]
    if routed:
        for frames in messages:
            frames.insert(0, parts[0])
    return messages
