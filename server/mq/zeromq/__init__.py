"""The embedded ZeroMQ backend: :class:`ZeroMQBroker` (runs in the server) and its client
:class:`ZeroMQQueue` (any process). Wire format: :mod:`.wire`; rules: :mod:`.dispatch`,
:mod:`.broker`, :mod:`.client`."""

from __future__ import annotations

from .broker import ZeroMQBroker
from .client import ZeroMQQueue

__all__ = ["ZeroMQBroker", "ZeroMQQueue"]
