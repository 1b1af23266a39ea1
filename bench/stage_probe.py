"""``python -m bench.stage_probe OUT serve FILE ...``: ``llamactl serve`` with a timestamp at each
stage of a task's path through the server, written to OUT when the server exits.

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

The wrappers cost a call and a clock read each (well under a microsecond); the server is
otherwise the checkout's own. At most :data:`MAX_EVENTS` stamps are kept (the latest).
"""

from __future__ import annotations

import atexit
import collections
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llamactl.cli.main import main as llamactl_main
from llamactl.server.apiserver.http_transport import CoalescingTransport
from llamactl.server.mq.zeromq import records
from llamactl.server.state._sqlite_writer import InlineWriter

__all__ = ["MAX_EVENTS", "install", "main"]

MAX_EVENTS = 400_000

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


def install(out: Path) -> None:
    """Wrap the stages' methods and write the stamps to ``out`` at exit."""
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
    if len(sys.argv) < 3:
        sys.exit("usage: python -m bench.stage_probe OUT serve FILE [serve options]")
    install(Path(sys.argv[1]))
    sys.argv = ["llamactl", *sys.argv[2:]]
    llamactl_main()


if __name__ == "__main__":
    main()
