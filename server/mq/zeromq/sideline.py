"""A client's side line to the broker: a plain blocking socket that a thread can use while the
client's event loop is blocked by user code (see ``MessageQueue.sidecar``)."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

import zmq

from . import wire
from .packing import pack, unpack
from .security import secure_client

__all__ = ["SideLine"]

_CONFIRM_WAIT_MS = 2000


class SideLine:
    """Vouches for ``client`` (its routing id) and publishes, from whichever thread uses it first."""

    def __init__(self, router: str, client: bytes, curve: Mapping[str, str] | None) -> None:
        self._router = router
        self._client = client
        self._curve = curve
        self._context: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._ids = itertools.count(1)

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            self._context = zmq.Context()
            sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, b"s" + uuid.uuid4().bytes)
            secure_client(sock, self._curve)
            sock.connect(self._router)
            self._sock = sock
        return self._sock

    def keepalive(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket().send(pack([wire.VOUCH, self._client]), flags=zmq.NOBLOCK)

    def publish(self, topic: str, payload: bytes, *, msg_id: str, key: str = "") -> bool:
        sock = self._socket()
        req = wire.u64(next(self._ids))
        frames = [wire.PUB, req, topic.encode(), msg_id.encode(), key.encode(), b"", payload]
        try:
            sock.send(pack(frames), flags=zmq.NOBLOCK)
            while sock.poll(_CONFIRM_WAIT_MS):
                try:
                    reply = unpack(sock.recv())
                except ValueError:
                    continue  # not ours to read: only the confirmation counts here
                if len(reply) >= 2 and reply[1] == req:
                    return reply[0] == wire.PUBACK
        except zmq.ZMQError:
            return False
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
