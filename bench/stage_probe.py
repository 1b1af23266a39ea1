"""``python -m bench.stage_probe [--split] OUT serve FILE ...``: ``llamactl serve`` with a timestamp
at each stage of a task's path through the server and its workers, written to OUT (the server's)
and ``OUT.worker-<pid>`` (each worker's) when they exit.

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

Its workers run under ``bench/stage_probe_worker.py``, which stamps the time between ``sent`` and
``result`` in them (``w_in``, ``w_handle``, ``w_run``, ``w_ran``, ``w_out``: see that module).

With ``--split``, the time between a result's read and its commit is cut finer (:data:`SPLIT`):

- ``frames``: the broker took the result's frames (``ZeroMQBroker._on_frames``);
- ``offer``: it offered the result to the control plane's consumer (``ConsumerState.offer``);
- ``apply``: a report's application began (``ReportDeliveries._apply``);
- ``final``: the final report's handler began (``Inbox._task_final``);
- ``transition``: the task record's change began (``ControlPlaneRecords.transition``);
- ``submit``: an operation went to the state store's writer (``SQLiteStateStore._submit``).

The async ones are wrapped in a coroutine of their own: a little more than the others cost.

The wrappers cost a call and a clock read each (well under a microsecond); the server is
otherwise the checkout's own. At most :data:`~bench.stamps.MAX_EVENTS` stamps are kept (the latest).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bench.stage_probe_worker import worker_command
from bench.stamps import note, stamped, stamped_async, write_at_exit
from llamactl.cli.main import main as llamactl_main
from llamactl.server.apiserver.http_transport import CoalescingTransport
from llamactl.server.control_plane.inbox import Inbox
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.report_deliveries import ReportDeliveries
from llamactl.server.deployment import launch
from llamactl.server.mq.zeromq import records
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.mq.zeromq.consumer import ConsumerState
from llamactl.server.services import command
from llamactl.server.state._sqlite_writer import InlineWriter
from llamactl.server.state.sqlite import SQLiteStateStore

__all__ = ["SPLIT", "install", "main"]

SPLIT: tuple[tuple[type, str, str], ...] = (
    (ZeroMQBroker, "_on_frames", "frames"),
    (ConsumerState, "offer", "offer"),
    (ReportDeliveries, "_apply", "apply"),
    (Inbox, "_task_final", "final"),
    (ControlPlaneRecords, "transition", "transition"),
    (SQLiteStateStore, "_submit", "submit"),
)
"""``--split``: the methods stamped between a result's read and its commit, in path order."""


def install(out: Path, *, split: bool = False) -> None:
    """Wrap the stages' methods (``split``: the finer ones too) and write the stamps to ``out``
    at exit."""
    if split:
        for cls, name, stage in SPLIT:
            method = getattr(cls, name)
            wrap = stamped_async if inspect.iscoroutinefunction(method) else stamped
            setattr(cls, name, wrap(stage, method))
    HttpToolsProtocol.data_received = stamped("read", HttpToolsProtocol.data_received)  # type: ignore[method-assign]
    records.Records._flush = stamped(  # type: ignore[method-assign]
        "sent", records.Records._flush, lambda r: bool(r._pending) and r.transport is not None
    )
    cut = records._cut

    def stamped_cut(view: bytes | bytearray, limit: int) -> Any:
        note("result")
        return cut(view, limit)

    records._cut = stamped_cut
    flush = InlineWriter._flush

    def stamped_flush(self: InlineWriter) -> None:
        note("commit")
        try:
            flush(self)
        finally:
            note("committed")

    InlineWriter._flush = stamped_flush  # type: ignore[method-assign]
    CoalescingTransport.write = stamped("answer", CoalescingTransport.write)  # type: ignore[method-assign]
    _probe_workers(out)
    write_at_exit(out)


def _probe_workers(out: Path) -> None:
    """Start the server's workers (those started ahead too) under ``bench/stage_probe_worker.py``."""
    plain = command.worker_command

    def probed(python: Path | None = None) -> list[str]:
        return worker_command(plain(python), out)

    command.worker_command = probed
    launch.worker_command = probed  # type: ignore[attr-defined]


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
