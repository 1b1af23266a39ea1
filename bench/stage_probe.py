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

With ``--split``, the time between a request's read and its task's send is cut finer
(:data:`REQUEST_SPLIT`):

- ``parsed``: uvicorn parsed the whole request (``HttpToolsProtocol.on_message_complete``);
- ``guard``: the ASGI app's request guard began (``RequestGuard.__call__``: the middlewares
  before it ran);
- ``route``: the route's handling began (``starlette.routing.Route.handle``);
- ``body``: the body's read and validation began (``validation.model_body``: the route's query
  and path parameters were read);
- ``handler``: the control plane's ``ControlPlane.run_task`` began (the task's definition built);
- ``create``: the control plane's dispatcher took the task (``Dispatcher.submit``: its checks
  passed and its record was built);
- ``publish``: its start message went to the queue (``TaskPublisher.publish``);
- ``link``: the in-process link handed the broker its frames (``LocalLink._flush``);
- ``deliver``: the broker delivered it to a worker (``zeromq.dispatch.Dispatcher._deliver``).

and so is the time between a result's read and its commit (:data:`SPLIT`):

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

from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bench.stage_probe_worker import worker_command
from bench.stamps import note, stamped, stamped_async, write_at_exit
from llamactl.cli.main import main as llamactl_main
from llamactl.server.apiserver import validation
from llamactl.server.apiserver.guard import RequestGuard
from llamactl.server.apiserver.http_transport import CoalescingTransport
from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.control_plane.dispatcher import Dispatcher
from llamactl.server.control_plane.inbox import Inbox
from llamactl.server.control_plane.publisher import TaskPublisher
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.report_deliveries import ReportDeliveries
from llamactl.server.deployment import launch
from llamactl.server.mq.zeromq import records
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.mq.zeromq.consumer import ConsumerState
from llamactl.server.mq.zeromq.dispatch import Dispatcher as BrokerDispatcher
from llamactl.server.mq.zeromq.local import LocalLink
from llamactl.server.services import command
from llamactl.server.state._sqlite_writer import InlineWriter
from llamactl.server.state.sqlite import SQLiteStateStore

__all__ = ["REQUEST_SPLIT", "SPLIT", "install", "main"]

REQUEST_SPLIT: tuple[tuple[object, str, str], ...] = (
    (HttpToolsProtocol, "on_message_complete", "parsed"),
    (RequestGuard, "__call__", "guard"),
    (Route, "handle", "route"),
    (validation, "model_body", "body"),
    (ControlPlane, "run_task", "handler"),
    (Dispatcher, "submit", "create"),
    (TaskPublisher, "publish", "publish"),
    (LocalLink, "_flush", "link"),
    (BrokerDispatcher, "_deliver", "deliver"),
)
"""``--split``: the methods (and a module's function) stamped between a request's read and its
task's send, in path order."""

SPLIT: tuple[tuple[object, str, str], ...] = (
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
        for owner, name, stage in (*REQUEST_SPLIT, *SPLIT):
            method = getattr(owner, name)
            wrap = stamped_async if inspect.iscoroutinefunction(method) else stamped
            setattr(owner, name, wrap(stage, method))
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
