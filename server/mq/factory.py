"""Build a :class:`~llamactl.server.mq.base.MessageQueue` client from a JSON-able config.

The config is what a broker hands out (``ZeroMQBroker.client_config``) or what a deployment
file names; workers receive it in their WorkerSpec (``spec.mq``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamactl.server.errors import MessageQueueError, QueueConfigError
from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.zeromq.client import ZeroMQQueue

__all__ = ["AVAILABLE_TYPES", "check_queue_config", "connect_queue"]

AVAILABLE_TYPES = ("zeromq", "redis")
_PLANNED_TYPES = ("rabbitmq",)


def connect_queue(config: Mapping[str, Any]) -> MessageQueue:
    """Return a client for ``config`` (not started: ``await q.start()`` or ``async with q``).

    ``config["type"]`` picks the backend: ``"zeromq"`` (keys: ``router``, ``heartbeat_interval``,
    ``liveness``, ``publish_timeout``) or ``"redis"`` (keys: ``url``, or ``host``/``port``/``db``/
    ``username``/``password``/``ssl``; ``prefix``, ``heartbeat_interval``, ``liveness``,
    ``max_attempts``, ``publish_timeout``, ``retention``: see
    :class:`~llamactl.server.mq.redis.RedisQueueConfig`). Raises MessageQueueError for anything else,
    and for ``"redis"`` when the ``redis`` package is not installed.
    """
    kind = config.get("type")
    if kind == "zeromq":
        return ZeroMQQueue.from_config(config)
    if kind == "redis":
        try:
            from llamactl.server.mq.redis import RedisQueue  # noqa: PLC0415  (redis-py is optional)
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] != "redis":
                raise
            raise MessageQueueError(
                "the redis message queue needs the redis package (redis-py): "
                f"pip install 'llamactl[redis]' ({exc})"
            ) from exc
        return RedisQueue.from_config(config)
    if kind in _PLANNED_TYPES:
        raise QueueConfigError(
            f"message queue type {kind!r} is not available yet; available: {', '.join(AVAILABLE_TYPES)}"
        )
    raise QueueConfigError(
        f"unknown message queue type {kind!r}; available: {', '.join(AVAILABLE_TYPES)} "
        f"({', '.join(_PLANNED_TYPES)}: not available yet)"
    )


def check_queue_config(config: Mapping[str, Any]) -> None:
    """Raise QueueConfigError, saying what is wrong, when :func:`connect_queue` would refuse
    ``config`` (a bad url, an unknown key; MessageQueueError: a backend whose package is
    missing); connects to nothing."""
    connect_queue(config)  # builds the client, which checks its config, and drops it unstarted
