"""The message queue contract (:mod:`.base`), topic names (:mod:`.topics`), backends and
:func:`~server.mq.factory.connect_queue`."""

from __future__ import annotations

from server.mq.base import Delivery, Message, MessageQueue
from server.mq.factory import connect_queue

__all__ = ["Delivery", "Message", "MessageQueue", "connect_queue"]
