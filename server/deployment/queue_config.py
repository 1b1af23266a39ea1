"""The client config of a deployment's message queue when it is not the embedded broker.

``message-queue: {type: redis, url: ...}`` (or Llama Deploy's ``host``/``port``/``db``/``username``/
``password``/``ssl``) names a Redis server that the control plane and every worker connect to,
so several servers and workers on other hosts can share the deployment's queue. Keys start with
``prefix`` (default ``llamactl:<deployment>:``): two deployments on one Redis never mix their
tasks, two servers of one deployment share them. Without ``url``, ``host`` or ``port`` in the file,
``$REDIS_URL`` says where Redis is (as in Llama Deploy), so a password need not be in the file.
"""

from __future__ import annotations

import os
from typing import Any

from llamactl.server.config import DeploymentConfig
from llamactl.server.errors import QueueConfigError
from llamactl.server.mq.factory import check_queue_config

__all__ = ["REDIS_URL_ENV", "external_queue_config"]

REDIS_URL_ENV = "REDIS_URL"
"""Where Redis is when the file gives no ``url``, ``host`` or ``port`` (keeps a password out of it)."""

_REDIS_CONNECTION = ("db", "username", "password", "ssl")


def external_queue_config(config: DeploymentConfig, *, heartbeat_interval: float) -> dict[str, Any]:
    """The JSON-able config :func:`~llamactl.server.mq.factory.connect_queue` takes, for the
    deployment's ``message-queue`` (any type but the embedded ``zeromq``); raises
    QueueConfigError, saying what is wrong, when that would refuse it (MessageQueueError: its
    backend's package is missing)."""
    mq = config.message_queue
    extra = dict(mq.model_extra or {})
    if mq.type != "redis":
        raise QueueConfigError(
            f"message-queue type '{mq.type}' is not available yet in llamactl: use the embedded "
            "queue (leave message-queue out, or `type: zeromq`) or `type: redis`"
        )
    out: dict[str, Any] = {
        "type": "redis",
        "prefix": str(extra.pop("prefix", f"llamactl:{config.name}:")),
        "heartbeat_interval": heartbeat_interval,
        "max_attempts": mq.max_attempts,
        "retention": mq.retention,
    }
    if mq.url:
        out["url"] = mq.url
    elif (
        "host" not in mq.model_fields_set
        and "port" not in mq.model_fields_set
        and os.environ.get(REDIS_URL_ENV)
    ):
        out["url"] = os.environ[REDIS_URL_ENV]  # Llama Deploy's RedisMessageQueueConfig reads it too
    else:
        out["host"] = mq.host
        out["port"] = mq.port or 6379
    for key in _REDIS_CONNECTION:
        if key in extra:
            out[key] = extra.pop(key)
    # Other keys (Llama Deploy's exclusive_mode: de-duplication is built in here; other backends'
    # fields) were reported by the deployment file's check as unknown or not used.
    check_queue_config(out)  # a bad url is refused here, before anything starts
    return out
