"""Who may talk to the embedded broker, and where it listens.

* **Keys made at start** (ZeroMQ CURVE, as the ZeroMQ guide's "Ironhouse" pattern): the broker
  creates a server key pair and one client key pair each time it starts. Its ROUTER socket is a
  CURVE server, and a ZAP handler lets in only connections that present the client key, so a
  local process that is not one of its workers can neither read nor send anything, a forged
  report included. The workers get the keys in their spec (never on a command line).
* **Where**: by default an ``ipc://`` socket in a folder only the server's user can open
  (``0700``), so other users of the machine cannot even connect; ``message-queue.port`` (or a host
  beyond loopback) binds TCP instead, for workers on other hosts, still behind the keys.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from llamactl.server.errors import MessageQueueError
from llamactl.server.hosts import is_loopback

__all__ = ["BrokerSocket", "CurveKeys", "secure_client"]

_DOMAIN = "llamactl"


@dataclass(frozen=True)
class CurveKeys:
    """The broker's key pair and the one its clients present (Z85 text)."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> CurveKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        keys = (server_public, server_secret, client_public, client_secret)
        return cls(*(key.decode() for key in keys))

    def for_clients(self) -> dict[str, str]:
        """What a client needs (the ``curve`` entry of the client config)."""
        return {"server": self.server_public, "public": self.client_public, "secret": self.client_secret}


class _OnlyOurClients:
    """ZAP credentials provider: the client key of this broker, and no other."""

    def __init__(self, client_public: str) -> None:
        self._key = client_public.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self._key


class BrokerSocket:
    """Makes and binds the broker's ROUTER socket, and undoes it all on :meth:`close`.

    ``endpoint`` binds exactly there (``tcp://...`` or ``ipc://...``); otherwise a ``port`` (0: any
    free one) or a host beyond loopback means TCP on ``host:port``, and neither means an ``ipc://``
    socket in a fresh private folder. ``keys`` (default: new ones) are what clients must present.
    """

    def __init__(
        self, *, host: str, port: int | None, endpoint: str | None = None, keys: CurveKeys | None = None
    ) -> None:
        self.host = host
        self.port = port
        self._wanted = endpoint
        self.keys = keys or CurveKeys.generate()
        self._context: zmq.Context[Any] | None = None
        self._authenticator: ThreadAuthenticator | None = None
        self._folder: str | None = None
        self.endpoint = ""

    @property
    def beyond_loopback(self) -> bool:
        """True when other machines can reach it (TCP on a non-loopback address)."""
        target = self._wanted or ("" if self._uses_ipc else f"tcp://{self.host}:")
        if not target.startswith("tcp://"):
            return False
        host = target.removeprefix("tcp://").rsplit(":", 1)[0]
        return host in ("*", "0.0.0.0", "::", "[::]") or not is_loopback(host)

    @property
    def _uses_ipc(self) -> bool:
        return self._wanted is None and self.port is None and is_loopback(self.host)

    def bind(self) -> zmq.Socket[bytes]:
        """A bound ROUTER socket (its address in :attr:`endpoint`)."""
        self._context = context = zmq.Context()
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(_DOMAIN, _OnlyOurClients(self.keys.client_public))
        sock.curve_server = True
        sock.curve_secretkey = self.keys.server_secret.encode()
        sock.zap_domain = _DOMAIN.encode()
        target = self._wanted
        if target is None and self._uses_ipc:
            target = f"ipc://{self.private_folder()}/broker.sock"
        elif target is None:
            target = f"tcp://{self.host}:{self.port or '*'}"
        try:
            sock.bind(target)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self.close()
            raise MessageQueueError(f"cannot bind the message broker on {target}: {exc}") from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def private_folder(self) -> str:
        """A fresh folder only the server's user can open (``0700``), removed on :meth:`close`."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="llamactl-")
        return self._folder

    def client_config(self) -> dict[str, Any]:
        return {"curve": self.keys.for_clients()}

    def close(self) -> None:
        if self._authenticator is not None:
            with contextlib.suppress(Exception):
                self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def secure_client(sock: zmq.Socket[bytes], curve: Mapping[str, str] | None) -> None:
    """Give a client socket the keys of its broker (before it connects)."""
    if not curve:
        return
    try:
        sock.curve_serverkey = curve["server"].encode()
        sock.curve_publickey = curve["public"].encode()
        sock.curve_secretkey = curve["secret"].encode()
    except (KeyError, AttributeError, zmq.ZMQError) as exc:
        raise MessageQueueError(
            "the zeromq client config's 'curve' entry needs the broker's 'server' key and the client's "
            f"'public' and 'secret' keys (Z85): {exc}"
        ) from exc
