"""The Redis client's side line: a blocking redis-py client that the loop watchdog's thread uses
while the client's event loop is blocked by user code (see ``MessageQueue.sidecar``)."""

from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from llamactl.server.mq.topics import validate_topic

from .config import RedisQueueConfig
from .lua_lib import script
from .scripts import KEEPALIVE, PUBLISH

__all__ = ["RedisSideLine"]

log = logging.getLogger(__name__)

_WAIT = 2.0
"""Seconds a side-line call waits for Redis at most."""


class RedisSideLine:
    """Vouches for one client and publishes for it, from one thread (connects on first use)."""

    def __init__(self, config: RedisQueueConfig, client_id: str) -> None:
        self._config = config
        self._client_id = client_id
        self._redis: redis.Redis | None = None
        self._common: list[str | int] = [config.prefix, config.max_attempts, int(config.retention * 1000)]

    def _connect(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self._config.url,
                socket_timeout=_WAIT,
                socket_connect_timeout=_WAIT,
                retry=Retry(NoBackoff(), 0),
            )
        return self._redis

    def keepalive(self) -> None:
        """Renew the client's heartbeat deadline, unless it was declared dead already (its leases
        are gone then, and vouching would not bring them back)."""
        r = self._connect()
        try:
            r.eval(script(KEEPALIVE), 0, *self._common, self._client_id, int(self._config.window * 1000))
        except (redis.RedisError, OSError) as exc:
            log.debug("side line keepalive failed: %s", exc)

    def publish(self, topic: str, payload: bytes, *, msg_id: str, key: str = "") -> bool:
        """Publish and wait (up to two seconds) for Redis to store it; True if it did."""
        validate_topic(topic)
        r = self._connect()
        try:
            r.eval(script(PUBLISH), 0, *self._common, topic, msg_id, key, "{}", bytes(payload))
        except (redis.RedisError, OSError) as exc:
            log.debug("side line publish to %s failed: %s", topic, exc)
            return False
        return True

    def close(self) -> None:
        """Disconnect (from the thread that used it)."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None
