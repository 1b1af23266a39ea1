"""``python -m bench.stage_probe_worker OUT``: a service's worker with a timestamp at each stage of
a task's path through it, written to ``OUT.worker-<pid>`` when it exits.

``bench/stage_probe.py`` starts its server's workers with this (:func:`worker_command`), so that
``bench.stages`` can cut the time between a task's send to its worker and the result's read
(the worker and the two hops) at:

- ``w_in``: the worker got bytes from the broker (``Records.data_received``);
- ``w_handle``: its handler of a delivery began (``Worker._handle``);
- ``w_run`` / ``w_ran``: the run began and ended (``execute``: the service's code, with the run
  set up around it and taken down);
- ``w_out``: a message left for the broker (``Records._flush`` with something to write).

The stamps (:mod:`bench.stamps`) wrap the methods before the worker's own module runs; the
worker is otherwise the checkout's own.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from bench.stamps import stamped, stamped_async, write_at_exit

__all__ = ["install", "main", "worker_command", "worker_out"]


def worker_command(plain: list[str], out: Path) -> list[str]:
    """The worker's command ``plain`` (``python -P -m llamactl.server.services``) run under this
    probe, its stamps going beside ``out``."""
    if plain[-2:] != ["-m", "llamactl.server.services"]:
        raise ValueError(f"not a worker's command: {plain}")
    return [*plain[:-2], "-m", "bench.stage_probe_worker", str(out)]


def worker_out(out: Path, pid: int) -> Path:
    """Where the worker of process ``pid`` writes its stamps, beside the server's ``out``."""
    return out.with_name(f"{out.name}.worker-{pid}")


def install(out: Path) -> None:
    """Wrap the worker's stages and write their stamps to :func:`worker_out` at exit."""
    # Here, not at the top: the server's probe imports this module for worker_command alone.
    from llamactl.server.mq.zeromq import records  # noqa: PLC0415
    from llamactl.server.services import worker  # noqa: PLC0415

    records.Records.data_received = stamped("w_in", records.Records.data_received)  # type: ignore[method-assign]
    worker.Worker._handle = stamped_async("w_handle", worker.Worker._handle)  # type: ignore[method-assign]
    worker.execute = stamped_async("w_run", worker.execute, end="w_ran")  # type: ignore[attr-defined]
    records.Records._flush = stamped(  # type: ignore[method-assign]
        "w_out", records.Records._flush, lambda r: bool(r._pending) and r.transport is not None
    )
    write_at_exit(worker_out(out, os.getpid()))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.stage_probe_worker OUT (run by bench.stage_probe's server)")
    install(Path(sys.argv[1]))
    sys.argv = [sys.argv[0]]
    runpy.run_module("llamactl.server.services", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
