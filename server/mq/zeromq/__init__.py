"""The embedded ZeroMQ backend: :class:`ZeroMQBroker` (runs in the server) and its client
:class:`ZeroMQQueue` (any process). Wire format: :mod:`.wire`; rules: :mod:`.dispatch`,
:mod:`.broker`, :mod:`.client`.

The broker (its journal, dispatcher and streams) is imported only when asked for: a worker
process needs the client alone, and every worker pays its imports when it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import ZeroMQQueue

if TYPE_CHECKING:
    from .broker import ZeroMQBroker

__all__ = ["ZeroMQBroker", "ZeroMQQueue"]


def __getattr__(name: str) -> Any:
    if name == "ZeroMQBroker":
        from .broker import ZeroMQBroker  # noqa: PLC0415  (the server's alone; see above)

        return ZeroMQBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
