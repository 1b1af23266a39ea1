"""The Redis backend of the message queue (draft docstring, completed below)."""

from __future__ import annotations

from .client import RedisQueue
from .config import RedisQueueConfig

__all__ = ["RedisQueue", "RedisQueueConfig"]
