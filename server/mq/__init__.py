"""The message queue contract (:mod:`.base`), topic names (:mod:`.topics`), backends and
:func:`~llamactl.server.mq.factory.connect_queue`."""

from __future__ import annotations

from llamactl.server.mq.base import Delivery, Message, MessageQueue
from llamactl.server.mq.factory import connect_queue

__all__ = ["Delivery", "Message", "MessageQueue", "connect_queue"]
