"""The main table's four servers, each measured on its own: the bare baseline, the one-hop floor,
the durable floor (the floor storing each task and its answer) and a real ``llamactl serve``; and
the median of several measurements of one of them.

``python -m bench.roundtrip`` measures the four in alternating rounds (:func:`bench.rounds.alternate`)
and reports :func:`median_figures` of each, so that the machine's drift during the run touches all
alike: the function echo's ratios to the floor moved from 2.2x to 2.9x between single-pass runs
of the same commit on one day.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.deployment import DEPLOYMENT, write_deployment
from bench.measure import ECHO_BODY, Throughput, first_event_latency, measure_endpoint, wait_first_success
from bench.procfs import TreeUsage, tree_usage
from bench.rounds import median_of, median_throughput
from bench.server_proc import ServerProcess

if TYPE_CHECKING:
    from bench.roundtrip import Options

__all__ = ["ServerFigures", "measure_baseline", "measure_floor", "measure_llamactl", "median_figures"]

WF_BODY = {**ECHO_BODY, "service_id": "wf"}


@dataclass(slots=True)
class ServerFigures:
    """What was measured on one server."""

    function: Throughput
    workflow: Throughput
    usage: TreeUsage
    idle_cpu: float
    start_seconds: float = math.nan
    first_task_seconds: float = math.nan
    first_event: float = math.nan
    first_event_p99: float = math.nan


def median_figures(runs: Sequence[ServerFigures]) -> ServerFigures:
    """One server's figures, each the median over ``runs`` (its measurements in several rounds)."""
    if len(runs) == 1:
        return runs[0]
    usage = TreeUsage(
        processes=max(r.usage.processes for r in runs),
        peak_rss_bytes=int(median_of([float(r.usage.peak_rss_bytes) for r in runs])),
        cpu_seconds=median_of([r.usage.cpu_seconds for r in runs]),
    )
    return ServerFigures(
        function=median_throughput([r.function for r in runs]),
        workflow=median_throughput([r.workflow for r in runs]),
        usage=usage,
        idle_cpu=median_of([r.idle_cpu for r in runs]),
        start_seconds=median_of([r.start_seconds for r in runs]),
        first_task_seconds=median_of([r.first_task_seconds for r in runs]),
        first_event=median_of([r.first_event for r in runs]),
        first_event_p99=median_of([r.first_event_p99 for r in runs]),
    )


async def _idle_cpu(pid: int, seconds: float) -> float:
    """CPU seconds the process tree used over ``seconds`` of doing nothing."""
    await asyncio.sleep(0.3)  # let the last responses and acks settle
    before = tree_usage(pid).cpu_seconds
    await asyncio.sleep(seconds)
    return tree_usage(pid).cpu_seconds - before


async def _measure(opts: Options, server: ServerProcess, path: str, body: dict[str, str]) -> Throughput:
    return await measure_endpoint(
        server.host,
        server.port,
        path,
        body,
        clients=opts.clients,
        duration=opts.duration,
        warmup=opts.warmup,
        processes=opts.client_processes,
        server_pid=server.pid,
    )


async def measure_baseline(opts: Options) -> ServerFigures:
    """The bare Starlette endpoint and the in-handler workflow on uvicorn."""
    argv = [sys.executable, "-m", "bench.baseline_server"]
    async with ServerProcess(argv, cwd=Path(__file__).parent.parent) as server:
        function = await _measure(opts, server, "/echo", ECHO_BODY)
        workflow = await _measure(opts, server, "/workflow", WF_BODY)
        usage = tree_usage(server.pid)
        idle = await _idle_cpu(server.pid, opts.idle)
        return ServerFigures(function, workflow, usage, idle, start_seconds=server.start_seconds)


async def measure_floor(opts: Options, *, durable: bool = False) -> ServerFigures:
    """The same two endpoints, each request forwarded to a worker process over ZeroMQ (``durable``:
    and each task stored before, its answer after, see :mod:`bench.floor_store`)."""
    argv = [sys.executable, "-m", "bench.floor_server", *(["--durable"] if durable else [])]
    async with ServerProcess(argv, cwd=Path(__file__).parent.parent) as server:
        function = await _measure(opts, server, "/echo", ECHO_BODY)
        workflow = await _measure(opts, server, "/workflow", WF_BODY)
        return ServerFigures(function, workflow, tree_usage(server.pid), math.nan)


async def measure_llamactl(opts: Options) -> ServerFigures:
    """A real ``llamactl serve`` subprocess on a generated deployment."""
    with tempfile.TemporaryDirectory(prefix="llamactl-bench-") as tmp:
        file = write_deployment(Path(tmp), opts.replicas, opts.max_concurrency)
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
        async with ServerProcess(argv, cwd=Path(tmp), start_timeout=120) as server:
            host, port = server.host, server.port
            run_path = f"/deployments/{DEPLOYMENT}/tasks/run"
            first_ok = await wait_first_success(host, port, run_path, ECHO_BODY)
            function = await _measure(opts, server, run_path, ECHO_BODY)
            workflow = await _measure(opts, server, run_path, WF_BODY)
            events = await first_event_latency(host, port, DEPLOYMENT, "stream", opts.event_runs)
            usage = tree_usage(server.pid)
            idle = await _idle_cpu(server.pid, opts.idle)
            return ServerFigures(
                function,
                workflow,
                usage,
                idle,
                start_seconds=server.start_seconds,
                first_task_seconds=first_ok - server.spawned_at,
                first_event=events.p50,
                first_event_p99=events.p99,
            )
