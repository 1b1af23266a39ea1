"""How a :class:`~llamactl.server.mq.zeromq.client.ZeroMQQueue` reaches its broker from another
process: the broker's Unix socket when it is on this machine, else a DEALER socket to its ROUTER.

Both carry the same frames (:mod:`.wire`) and hand what arrives to ``on_frames`` in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import zmq

from llamactl.server.errors import MessageQueueError

from .local import FrameHandler
from .pump import Pump
from .security import secure_client
from .unix_link import UnixLink

__all__ = ["open_dealer", "reach_unix"]

log = logging.getLogger(__name__)


def open_dealer(router: str, ident: bytes, curve: Mapping[str, str] | None, on_frames: FrameHandler) -> Pump:
    """A DEALER socket with routing id ``ident`` connected to ``router`` (it reconnects by itself);
    raises MessageQueueError for a bad address or keys."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, ident)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    try:
        secure_client(sock, curve)
        sock.connect(router)
    except MessageQueueError:
        sock.close(linger=0)
        raise
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise MessageQueueError(f"bad broker address {router!r}: {exc}") from exc
    return Pump(sock, on_frames)


async def reach_unix(
    path: str,
    ident: bytes,
    curve: Mapping[str, str],
    *,
    on_frames: FrameHandler,
    on_reconnect: Callable[[], None],
    on_refused: Callable[[str], None],
    fallback: str,
) -> UnixLink | None:
    """The broker's Unix socket at ``path``, or None if it is out of reach (the broker runs on
    another machine; the caller uses ``fallback``, its ROUTER, instead)."""
    link = UnixLink(
        path,
        ident,
        str(curve.get("secret", "")).encode(),
        on_frames=on_frames,
        on_reconnect=on_reconnect,
        on_refused=on_refused,
    )
    try:
        await link.connect()
    except OSError as exc:
        log.debug("the broker's Unix socket %s is out of reach (%s): using %s", path, exc, fallback)
        return None
    return link
