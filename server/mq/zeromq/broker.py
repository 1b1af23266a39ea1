"""The embedded ZeroMQ broker: one ROUTER socket, a SQLite journal, work dispatch, stream reads.

It runs on the caller's asyncio loop (the server's). Clients (:class:`ZeroMQQueue`) connect a
DEALER to the ROUTER; the frames are described in :mod:`llamactl.server.mq.zeromq.wire`, and
what each command does is :mod:`.commands`.

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
  (it was only paused), it is a new peer: its ``HB`` replies carry a new session, so it registers
  again. Nothing is kept of a peer once it is gone.
* Results handed over: an ``ACKPUB`` to one of ``direct_topics`` (work topics that only clients of
  this process consume: the control plane's reports) is answered and delivered at once, without
  being journaled. The message it settles stays pending in the journal until the result is
  acked, so a crash before that runs the message again rather than losing its result. A result
  whose message another result had settled is dropped (``late_results``): the first one counts.
  A result of work held in memory goes to an in-process consumer with room by a call, without a
  lease or frames (:mod:`.local_results`, ``handed_locally``).
* Work held in memory: a ``PUBMEM`` from a client of this process (the control plane's task
  start messages, which it restores itself after a restart) is not journaled at all
  (:mod:`.memory_work`).
* Workers on this machine: a Unix socket beside the ROUTER (:mod:`.unix_listener`) carries the
  same messages without ZeroMQ's I/O threads; its clients are peers like the ROUTER's, and one
  whose connection ends is gone at once.
* Recovery: with a file journal, a restarted broker reloads pending work. Leased rows stay
  leased to their owner for one liveness period; if the owner (same routing id) does not come
  back, they are released.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import zmq

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.topics import dead_letter_topic

from .client import ZeroMQQueue
from .commands import Commands
from .committed import Committed
from .direct import DirectResults
from .dispatch import Dispatcher
from .entries import Entry, dead_letter_headers, restored
from .housekeeping import STREAM_RETENTION, Housekeeping
from .journal import Journal, PendingRow
from .local import FrameHandler, LocalLink
from .local_results import LocalResults
from .memory_work import MemoryWork
from .peer_links import PeerLinks
from .peers import Peers
from .pump import Pump
from .security import BrokerSocket, CurveKeys
from .streams import Streams
from .unix_listener import UnixListener

__all__ = ["STREAM_RETENTION", "ZeroMQBroker"]


class ZeroMQBroker:
    """The broker. ``start()`` binds and recovers the journal; ``close()`` stops it quickly.

    Where it listens and who may connect: see :mod:`.security` (by default an ``ipc://`` socket in
    a private folder; a ``port`` or a host beyond loopback means TCP, ``port`` 0 a free one;
    ``endpoint`` binds exactly there). Only clients holding the keys of ``client_config`` connect
    (``keys``: new ones by default; pass the same to a restarted broker to keep its clients).
    ``unix``: also listen on a Unix socket for clients on this machine (at ``unix_path``, by
    default in a fresh private folder); the client config names it, and clients that can reach it
    use it instead of ZeroMQ. ``journal_path`` None keeps the journal in memory.
    ``pub_port`` is accepted for compatibility and unused (streams are served over the ROUTER).
    ``retention``: seconds a settled work message stays in the journal, so that a publish of the
    same ``msg_id`` is still recognised as a duplicate; stream messages (a task's inputs) stay
    :data:`STREAM_RETENTION` seconds. ``direct_topics``: work topics whose results (``ACKPUB``)
    are handed to their consumer without being journaled (see the module docstring); only for
    topics that clients of this process alone consume.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        endpoint: str | None = None,
        keys: CurveKeys | None = None,
        pub_port: int = 0,
        journal_path: Path | None = None,
        max_attempts: int = 5,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        retention: float = 60.0,
        direct_topics: Collection[str] = (),
        unix: bool = True,
        unix_path: Path | None = None,
    ) -> None:
        self._socket = BrokerSocket(host=host, port=port, endpoint=endpoint, keys=keys)
        self._journal_path = journal_path
        self._max_attempts = max_attempts
        self._hb = heartbeat_interval
        self._liveness = liveness
        self._retention = retention
        self._epoch = os.urandom(8).hex().encode()
        self._endpoint = ""
        self._pump: Pump | None = None
        self._links: PeerLinks | None = None
        self._journal: Journal | None = None
        self._dispatcher: Dispatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers = Peers(self._epoch, heartbeat_interval * liveness)
        self._streams: Streams | None = None
        self._housekeeping: Housekeeping | None = None
        self._closed = False
        self._want_unix = unix
        self._unix_path = unix_path
        self._listener: UnixListener | None = None
        self._direct_topics = frozenset(direct_topics)
        self._direct: DirectResults | None = None
        self._local_results = LocalResults()
        self._memory: MemoryWork | None = None
        self._committed: Committed | None = None
        self._commands: Commands | None = None

    @property
    def client_config(self) -> dict[str, Any]:
        """What :func:`llamactl.server.mq.factory.connect_queue` needs to reach this broker (JSON-able)."""
        if not self._endpoint:
            raise MessageQueueError("the broker is not started: call start() first")
        config = {
            "type": "zeromq",
            "router": self._endpoint,
            "heartbeat_interval": self._hb,
            "liveness": self._liveness,
            **self._socket.client_config(),
        }
        if self._listener is not None:
            config["unix"] = str(self._listener.path)
        return config

    @property
    def late_results(self) -> int:
        """Results (ACKPUB) for a message that another consumer's result had settled already."""
        committed, direct = self._committed, self._direct
        return (0 if committed is None else committed.late_results) + (
            0 if direct is None else direct.late_results
        )

    @property
    def handed_locally(self) -> int:
        """Results handed by a call to a consumer in this process (:mod:`.local_results`)."""
        return 0 if self._direct is None else self._direct.handed_locally

    @property
    def keys(self) -> CurveKeys:
        return self._socket.keys

    @property
    def beyond_loopback(self) -> bool:
        """True when machines other than this one can reach the broker (it still wants its keys)."""
        return self._socket.beyond_loopback

    @property
    def journal_failures(self) -> int:
        """Journal transactions that failed so far (a full disk, an I/O error)."""
        return 0 if self._journal is None else self._journal.failed_commits

    @property
    def journal_healthy(self) -> bool:
        """False while the journal's commits fail (it keeps retrying what it must write)."""
        return self._journal is not None and self._journal.healthy

    def connect_local(self, *, publish_timeout: float = 10.0) -> ZeroMQQueue:
        """A client (not started) for code in this process and loop, linked without a socket."""
        return ZeroMQQueue(
            self._endpoint or "local",
            heartbeat_interval=self._hb,
            liveness=self._liveness,
            publish_timeout=publish_timeout,
            attach=self._attach_local,
            local_results=self._local_results,
        )

    def _attach_local(self, ident: bytes, to_client: FrameHandler) -> LocalLink:
        """Link an in-process client: return the link it sends on; replies go to ``to_client``."""
        if self._closed or self._links is None:
            raise MessageQueueError("the broker is not running: start it before connecting")
        return self._links.attach_local(
            ident,
            to_client,
            lambda batch: self._on_frames([[ident, *frames] for frames in batch], local=True),
        )

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
        self._direct = DirectResults(
            self._direct_topics,
            self._dispatcher,
            self._journal.submit,
            self._send,
            confirm=self._confirm,
            local=self._local_results,
            taken_back=self._after_take_back,
        )
        self._memory = MemoryWork(self._dispatcher, self._send)
        self._committed = Committed(self._dispatcher, self._streams, self._direct, self._send)
        self._commands = Commands(
            peers=self._peers,
            dispatcher=self._dispatcher,
            streams=self._streams,
            journal=self._journal,
            direct=self._direct,
            memory=self._memory,
            send=self._send,
            on_bye=lambda ident: self._drop_peer(ident, "consumer closed", crashed=False),
        )
        pending = await self._journal.open()
        try:
            sock = self._socket.bind()
        except MessageQueueError:
            await self._journal.close()
            raise
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 0)  # replies are bounded by the protocol (credit, one batch)
        sock.setsockopt(zmq.RCVHWM, 0)
        self._endpoint = self._socket.endpoint
        self._recover(pending)
        self._pump = Pump(sock, self._on_frames)
        self._links = PeerLinks(loop, self._pump, self._unix_client_gone)
        if self._want_unix:
            path = self._unix_path or Path(self._socket.private_folder()) / "broker.unix"
            self._listener = UnixListener(
                path,
                self._socket.keys.client_secret.encode(),
                on_attach=self._links.attach_unix,
                on_frames=self._on_frames,
                on_detach=self._links.detach_unix,
            )
            try:
                await self._listener.start()
            except MessageQueueError:
                self._links.close()
                self._pump.close()
                self._socket.close()
                await self._journal.close()
                raise
        self._housekeeping = Housekeeping(
            loop,
            dispatcher=self._dispatcher,
            peers=self._peers,
            journal=self._journal,
            streams=self._streams,
            drop_peer=self._drop_peer,
            heartbeat_interval=self._hb,
            retention=self._retention,
        )
        self._rearm()

    async def close(self) -> None:
        if self._closed or self._journal is None:
            self._closed = True
            return
        self._closed = True
        if self._housekeeping is not None:
            self._housekeeping.stop()
        if self._links is not None:
            self._links.close()  # sends the confirms still held: before the pump closes
        if self._pump is not None:
            self._pump.close()
        if self._listener is not None:
            self._listener.close()
        self._socket.close()
        await self._journal.close()

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self, rows: list[PendingRow]) -> None:
        assert self._dispatcher is not None and self._loop is not None
        now, wall = self._loop.time(), time.time()
        for row in rows:
            e = restored(row, now, wall)
            if e.owner is not None:
                self._peers.known(e.owner, now)
            self._dispatcher.add(e)
        self._dispatcher.flush()

    # -- sockets ----------------------------------------------------------------------------------

    def _send(self, ident: bytes, frames: list[bytes]) -> bool:
        assert self._links is not None
        return self._links.send(ident, frames)

    def _confirm(self, ident: bytes, frames: list[bytes]) -> bool:
        """Send a confirm with the peer's next message (see :mod:`.held`)."""
        assert self._links is not None
        return self._links.confirm(ident, frames)

    def _unix_client_gone(self, ident: bytes) -> None:
        """A client's Unix connection ended: it is gone now, not after its silence."""
        if self._closed:
            return
        assert self._dispatcher is not None
        self._drop_peer(ident, "consumer lost")
        self._dispatcher.flush()  # what it held goes to the others now
        self._rearm()

    def _after_take_back(self) -> None:
        """A result came back from a consumer in this process: dispatch it (or time its delay)."""
        if not self._closed and self._dispatcher is not None:
            self._dispatcher.flush()
            self._rearm()

    def _on_frames(self, batch: list[list[bytes]], *, local: bool = False) -> None:
        """Frames from clients; ``local``: from a client linked in this process."""
        assert self._commands is not None and self._dispatcher is not None and self._loop is not None
        self._commands.apply(batch, self._loop.time(), local=local)
        self._dispatcher.flush()
        self._rearm()

    # -- journal results --------------------------------------------------------------------------

    def _on_results(self, results: list[tuple[Any, ...]]) -> None:
        if self._closed:
            return
        assert self._committed is not None
        self._committed.apply(results)
        self._rearm()

    def _on_dead(self, e: Entry, reason: str) -> None:
        assert self._journal is not None
        dlq, headers = dead_letter_topic(e.topic), dead_letter_headers(e, reason)
        self._journal.submit(("pub", None, dlq, e.msg_id, e.key, headers, e.payload, True))
        assert self._dispatcher is not None
        self._dispatcher.journal_done(e)

    # -- liveness and timers ----------------------------------------------------------------------

    def _drop_peer(self, ident: bytes, reason: str, *, crashed: bool = True) -> None:
        assert self._dispatcher is not None and self._streams is not None
        self._peers.forget(ident)
        if self._links is not None:
            self._links.forget(ident)
        self._dispatcher.drop_peer(ident, reason, crashed=crashed)
        self._streams.drop_peer(ident)

    def _rearm(self) -> None:
        """A deadline may have come closer (see :mod:`.housekeeping`)."""
        if self._housekeeping is not None and not self._closed:
            self._housekeeping.rearm()
