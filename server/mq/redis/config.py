"""The Redis backend's configuration: where Redis is, and the queue's own settings."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from llamactl.server.errors import QueueConfigError
from llamactl.server.url_secrets import hide_query_password, query_passwords

__all__ = ["RedisQueueConfig", "redact", "scrub"]

_CONNECTION_KEYS = {"url", "host", "port", "db", "username", "password", "ssl"}
_QUEUE_KEYS = {"prefix", "heartbeat_interval", "liveness", "max_attempts", "publish_timeout", "retention"}
_KEYS = {"type"} | _CONNECTION_KEYS | _QUEUE_KEYS
# What a url's query may set. redis-py hands any other key to its connections, which fail on
# the first connect (a bare TypeError) or, worse, connect and change what replies look like.
_QUERY_KEYS = {"db", "username", "password", "client_name", "socket_connect_timeout", "socket_keepalive"}
_TLS_QUERY_KEYS = {
    "ssl_ca_certs", "ssl_ca_data", "ssl_ca_path", "ssl_cert_reqs", "ssl_certfile", "ssl_check_hostname",
    "ssl_ciphers", "ssl_keyfile", "ssl_min_version", "ssl_password",
}  # fmt: skip
_QUEUE_OWNS = {  # set by the queue itself: a url's value would undo what it relies on
    "socket_timeout": "publish_timeout bounds every call",
    "timeout": "publish_timeout bounds every call",
    "retry_on_timeout": "the queue retries within publish_timeout itself",
    "retry_on_error": "the queue retries within publish_timeout itself",
    "max_connections": "the queue sizes its own pools",
}


@dataclass(frozen=True, slots=True)
class RedisQueueConfig:
    """Settings of a :class:`~llamactl.server.mq.redis.RedisQueue`.

    Example::

        RedisQueueConfig.from_mapping({"type": "redis", "url": "redis://127.0.0.1:6379/0"})
        RedisQueueConfig.from_mapping({"type": "redis", "host": "redis", "port": 6380, "ssl": True})
    """

    url: str = field(repr=False)
    """``redis://`` / ``rediss://`` / ``unix://`` URL; may hold a password (never shown: see ``where``)."""
    prefix: str = "llamactl:"
    """Every key of the queue starts with it: queues sharing one Redis need different prefixes."""
    heartbeat_interval: float = 1.0
    """Seconds between a client's heartbeats (each also does janitor duty)."""
    liveness: int = 3
    """Heartbeats a client may miss before its leases are released."""
    max_attempts: int = 5
    """Failed deliveries before a message goes to its dead-letter topic (same for all clients)."""
    publish_timeout: float = 10.0
    """Seconds a publish (or ack, nack, extend, discard) keeps trying before it fails."""
    retention: float = 60.0
    """Seconds a settled work message's ``msg_id`` is remembered, so that a resent publish is absorbed."""

    @property
    def window(self) -> float:
        """Seconds of silence after which a client is declared dead."""
        return self.heartbeat_interval * self.liveness

    @property
    def where(self) -> str:
        """The URL without its credentials, for messages and logs."""
        return redact(self.url)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> RedisQueueConfig:
        """Read Llama Deploy's keys (``url``, or ``host``/``port``/``db``/``username``/``password``/
        ``ssl``) and ours; raise QueueConfigError naming what is wrong."""
        unknown = set(config) - _KEYS
        if unknown:
            takes = sorted(_KEYS - {"type"})
            raise QueueConfigError(
                f"redis message queue config: unknown keys {sorted(unknown)}; it takes {takes}"
            )
        if "url" in config and set(config) & (_CONNECTION_KEYS - {"url"}):
            raise QueueConfigError(
                "redis message queue config: give either 'url' or 'host'/'port'/'db'/'username'/"
                "'password'/'ssl', not both"
            )
        url = str(config["url"]) if "url" in config else _url_from_parts(config)
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise QueueConfigError(
                f"redis message queue config: bad url {redact(url)!r}: it must start with redis://, "
                "rediss:// or unix://"
            )
        if scheme != "unix":
            _check_port(url)
        _check_query(url, tls=scheme == "rediss")
        try:
            made = cls(
                url=url,
                prefix=str(config.get("prefix", "llamactl:")),
                heartbeat_interval=float(config.get("heartbeat_interval", 1.0)),
                liveness=int(config.get("liveness", 3)),
                max_attempts=int(config.get("max_attempts", 5)),
                publish_timeout=float(config.get("publish_timeout", 10.0)),
                retention=float(config.get("retention", 60.0)),
            )
        except (TypeError, ValueError) as exc:
            raise QueueConfigError(f"redis message queue config: {exc}") from exc
        made._check()
        return made

    def _check(self) -> None:
        numbers = (self.heartbeat_interval, self.publish_timeout, self.retention)
        if not all(math.isfinite(x) and x > 0 for x in numbers) or self.liveness < 1:
            raise QueueConfigError(
                "redis message queue config: heartbeat_interval, publish_timeout and retention must be "
                "positive numbers and liveness at least 1"
            )
        if self.max_attempts < 1:
            raise QueueConfigError("redis message queue config: max_attempts must be at least 1")
        if not self.prefix or " " in self.prefix:
            raise QueueConfigError("redis message queue config: prefix must be non-empty, without spaces")


def _check_port(url: str) -> None:
    """Refuse a url whose port is empty (``host:/0``, which redis-py would take for 6379: a typo
    that points at another Redis without a word) or not a number."""
    address = urlsplit(url).netloc.rsplit("@", 1)[-1]
    if address.endswith(":"):
        raise QueueConfigError(
            f"redis message queue config: bad url {redact(url)!r}: it has an empty port: write the "
            "port (Redis listens on 6379 unless told otherwise) or leave out the ':'"
        )
    try:
        _ = urlsplit(url).port
    except ValueError:  # not shown: a password with a '/' in it would be read as the port
        raise QueueConfigError(
            f"redis message queue config: bad url {redact(url)!r}: its port is not a number"
            " (a password with '/', '@' or ':' in it must be percent-encoded: %2F, %40, %3A)"
        ) from None


def _check_query(url: str, *, tls: bool) -> None:
    """Refuse a query key the queue does not take, saying which it takes (and, for a key it sets
    itself, which setting to use instead)."""
    takes = _QUERY_KEYS | (_TLS_QUERY_KEYS if tls else set())
    for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key in takes:
            continue
        bad = f"redis message queue config: bad url {redact(url)!r}: "
        if key.lower() in _QUEUE_OWNS:
            why = _QUEUE_OWNS[key.lower()]
            raise QueueConfigError(f"{bad}llamactl sets {key.lower()!r} itself ({why}): leave it out")
        if key in _TLS_QUERY_KEYS:
            raise QueueConfigError(f"{bad}{key!r} applies to TLS only: start the url with rediss://")
        near = difflib.get_close_matches(key.lower(), sorted(takes), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise QueueConfigError(
            f"{bad}its query key {key!r} is not one it takes{hint}; it takes {sorted(takes)}"
        )


def _url_from_parts(config: Mapping[str, Any]) -> str:
    host = str(config.get("host", "127.0.0.1"))
    try:
        port = int(config.get("port", 6379))
        db = int(config.get("db", 0))
    except (TypeError, ValueError) as exc:
        raise QueueConfigError(f"redis message queue config: port and db must be integers ({exc})") from exc
    user = config.get("username")
    password = config.get("password")
    auth = ""
    if user is not None or password is not None:
        auth = quote(str(user or ""), safe="")
        if password is not None:
            auth += ":" + quote(str(password), safe="")
        auth += "@"
    scheme = "rediss" if _truthy(config.get("ssl", False)) else "redis"
    netloc_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{netloc_host}:{port}/{db}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def redact(url: str) -> str:
    """``url`` without its credentials (``user:password@`` becomes ``***@``, ``?password=...``
    ``?password=***``), even when it does not parse."""
    url = hide_query_password(url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def scrub(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) with the pieces of the URL's credentials hidden."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    pieces = sorted(
        {userinfo, *userinfo.replace("/", ":").split(":"), *query_passwords(url)}, key=len, reverse=True
    )
    for piece in pieces:
        if len(piece) >= 3:
            text = text.replace(piece, "***")
    return text
