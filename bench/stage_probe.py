"""``python -m bench.stage_probe [--split] OUT serve FILE ...``: ``llamactl serve`` with a timestamp
at each stage of a task's path through the server, written to OUT when the server exits.

Used by :mod:`bench.stages`. Before the server starts, a few methods of the classes a request
passes through are wrapped so that each call notes ``(stage, time.perf_counter_ns())``; the
clock is CLOCK_MONOTONIC, the same in every process of the machine, so the driver can cut out
its own window. The stages, in a sequential task's order:

- ``read``: uvicorn got bytes of a request (``HttpToolsProtocol.data_received``);
- ``sent``: a message left for a worker over its Unix socket (``Records._flush`` with something
  to write);
- ``result``: bytes came back from a worker (``records._cut``, called once per read);
- ``commit`` / ``committed``: the state store's in-loop writer began and ended a transaction
  (``InlineWriter._flush``);
- ``answer``: a write of the HTTP answer (``CoalescingTransport.write``).

With ``--split``, the time between a result's read and its commit is cut finer (:data:`SPLIT`):

- ``frames``: the broker took the result's frames (``ZeroMQBroker._on_frames``);
- ``offer``: it offered the result to the control plane's consumer (``ConsumerState.offer``);
- ``apply``: a report's application began (``ReportDeliveries._apply``);
- ``final``: the final report's handler began (``Inbox._task_final``);
- ``transition``: the task record's change began (``ControlPlaneRecords.transition``);
- ``submit``: an operation went to the state store's writer (``SQLiteStateStore._submit``).

The async ones are wrapped in a coroutine of their own: a little more than the others cost.

The wrappers cost a call and a clock read each (well under a microsecond); the server is
otherwise the checkout's own. At most :data:`MAX_EVENTS` stamps are kept (the latest).
"""

from __future__ import annotations

import atexit
import collections
import functools
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llamactl.cli.main import main as llamactl_main
from llamactl.server.apiserver.http_transport import CoalescingTransport
from llamactl.server.control_plane.inbox import Inbox
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.report_deliveries import ReportDeliveries
from llamactl.server.mq.zeromq import records
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.mq.zeromq.consumer import ConsumerState
from llamactl.server.state._sqlite_writer import InlineWriter
from llamactl.server.state.sqlite import SQLiteStateStore

__all__ = ["MAX_EVENTS", "SPLIT", "install", "main"]

MAX_EVENTS = 400_000

SPLIT: tuple[tuple[type, str, str], ...] = (
    (ZeroMQBroker, "_on_frames", "frames"),
    (ConsumerState, "offer", "offer"),
    (ReportDeliveries, "_apply", "apply"),
    (Inbox, "_task_final", "final"),
    (ControlPlaneRecords, "transition", "transition"),
    (SQLiteStateStore, "_submit", "submit"),
)
"""``--split``: the methods stamped between a result's read and its commit, in path order."""

_events: collections.deque[tuple[str, int]] = collections.deque(maxlen=MAX_EVENTS)


def _stamped(stage: str, method: Callable[..., Any], when: Callable[[Any], bool] | None = None) -> Any:
    note = _events.append
    clock = time.perf_counter_ns

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if when is None or when(self):
            note((stage, clock()))
        return method(self, *args, **kwargs)

    return wrapper


def _stamped_async(stage: str, method: Callable[..., Any]) -> Any:
    note = _events.append
    clock = time.perf_counter_ns

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        note((stage, clock()))
        return await method(self, *args, **kwargs)

    return wrapper


def install(out: Path, *, split: bool = False) -> None:
    """Wrap the stages' methods (``split``: the finer ones too) and write the stamps to ``out``
    at exit."""
    if split:
        for cls, name, stage in SPLIT:
            method = getattr(cls, name)
            wrap = _stamped_async if inspect.iscoroutinefunction(method) else _stamped
            setattr(cls, name, wrap(stage, method))
    HttpToolsProtocol.data_received = _stamped("read", HttpToolsProtocol.data_received)  # type: ignore[method-assign]
    records.Records._flush = _stamped(  # type: ignore[method-assign]
        "sent", records.Records._flush, lambda r: bool(r._pending) and r.transport is not None
    )
    cut = records._cut

    def stamped_cut(view: bytes | bytearray, limit: int) -> Any:
        _events.append(("result", time.perf_counter_ns()))
        return cut(view, limit)

    records._cut = stamped_cut
    flush = InlineWriter._flush

    def stamped_flush(self: InlineWriter) -> None:
        _events.append(("commit", time.perf_counter_ns()))
        try:
            flush(self)
        finally:
            _events.append(("committed", time.perf_counter_ns()))

    InlineWriter._flush = stamped_flush  # type: ignore[method-assign]
    CoalescingTransport.write = _stamped("answer", CoalescingTransport.write)  # type: ignore[method-assign]
    atexit.register(_write, out)


def _write(out: Path) -> None:
    out.write_text("".join(f"{t} {stage}\n" for stage, t in _events))


def main() -> None:
    args = sys.argv[1:]
    split = bool(args) and args[0] == "--split"
    if split:
        args = args[1:]
    if len(args) < 2:
        sys.exit("usage: python -m bench.stage_probe [--split] OUT serve FILE [serve options]")
    install(Path(args[0]), split=split)
    sys.argv = ["llamactl", *args[1:]]
    llamactl_main()


if __name__ == "__main__":
    main()
