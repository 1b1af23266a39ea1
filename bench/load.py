"""Closed-loop load: N keep-alive connections, each sending the same request back to back.

One process drives the load by default; ``processes > 1`` splits the connections over that
many client processes that start at the same instant, and merges their latencies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import time
from dataclasses import dataclass, field

from bench.http_client import HttpConnection, HttpError
from bench.procfs import CpuSplit, cpu_split, machine_cpu
from bench.stats import Summary, summarize

__all__ = ["LoadResult", "LoadSpec", "run_load", "run_load_processes"]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, where, how hard and for how long."""

    host: str
    port: int
    request: bytes
    """The raw request bytes every connection sends (see :func:`bench.http_client.build_request`)."""
    expect_status: int = 200
    expect_body: bytes | None = None
    """When given, a response with another body counts as an error."""
    connections: int = 1
    duration: float = 1.0
    warmup: float = 0.0
    """Seconds of requests sent first and not recorded."""
    server_pid: int | None = None
    """When given, the CPU of this process and its descendants is measured over the window."""


@dataclass(slots=True)
class LoadResult:
    """Latencies (seconds) of the successful requests inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0
    """CPU seconds used by the client process(es) during the measured window."""
    per_connection: list[int] = field(default_factory=list)
    first_error: str | None = None
    server_cpu: float = math.nan
    """CPU seconds used by ``server_pid`` and its descendants during the window."""
    server_split: CpuSplit | None = None
    """``server_cpu`` split into the server's event loop, its other threads and each worker."""
    machine_busy: float = math.nan
    """CPU seconds used by the whole machine during the window."""
    steal: float = math.nan
    """CPU seconds stolen by the hypervisor during the window."""

    @property
    def foreign_cores(self) -> float:
        """Cores used by neither the server nor the client (other work on the machine)."""
        if self.elapsed <= 0:
            return math.nan
        return max(0.0, self.machine_busy - self.server_cpu - self.client_cpu) / self.elapsed

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> Summary:
        """Percentiles of the latencies."""
        return summarize(self.latencies)

    def merge(self, other: LoadResult) -> None:
        """Add another process's result (run over the same window)."""
        self.latencies += other.latencies
        self.errors += other.errors
        self.elapsed = max(self.elapsed, other.elapsed)
        self.client_cpu += other.client_cpu
        self.per_connection += other.per_connection
        self.first_error = self.first_error or other.first_error
        # Every process measured the same server over the same window.
        self.server_cpu = other.server_cpu if math.isnan(self.server_cpu) else self.server_cpu
        self.server_split = self.server_split or other.server_split
        self.machine_busy = other.machine_busy if math.isnan(self.machine_busy) else self.machine_busy
        self.steal = other.steal if math.isnan(self.steal) else self.steal


async def _connection(spec: LoadSpec, phase: list[int], result: LoadResult, index: int) -> None:
    """One client: send until the phase flag says stop; record only during phase 1."""
    conn = HttpConnection(spec.host, spec.port)
    latencies = result.latencies
    perf = time.perf_counter
    raw, status, body = spec.request, spec.expect_status, spec.expect_body
    try:
        while phase[0] < 2:
            started = perf()
            try:
                response = await conn.send(raw)
            except (HttpError, OSError, asyncio.IncompleteReadError) as exc:
                result.errors += phase[0] == 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                await conn.close()
                await asyncio.sleep(0.01)
                continue
            if phase[0] != 1:
                continue
            if response.status != status or (body is not None and response.body != body):
                result.errors += 1
                result.first_error = result.first_error or f"{response.status} {response.body[:200]!r}"
                continue
            latencies.append(perf() - started)
            result.per_connection[index] += 1
    finally:
        await conn.close()


async def run_load(spec: LoadSpec, start_at: float | None = None) -> LoadResult:
    """Run ``spec`` in this process's event loop; ``start_at`` (``time.time()``) aligns processes."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    result = LoadResult(per_connection=[0] * spec.connections)
    phase = [0 if spec.warmup > 0 else 1]
    tasks = [asyncio.create_task(_connection(spec, phase, result, i)) for i in range(spec.connections)]
    if spec.warmup > 0:
        await asyncio.sleep(spec.warmup)
        phase[0] = 1
    server0 = cpu_split(spec.server_pid) if spec.server_pid else None
    machine0 = machine_cpu()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(spec.duration)
    phase[0] = 2
    result.elapsed = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    machine1 = machine_cpu()
    if server0 is not None:
        split = result.server_split = cpu_split(spec.server_pid) - server0
        result.server_cpu = split.process + split.workers
    result.machine_busy = machine1.busy - machine0.busy
    result.steal = machine1.steal - machine0.steal
    await asyncio.gather(*tasks)
    return result


def _process_main(spec: LoadSpec, start_at: float) -> LoadResult:
    """Entry point of a client process."""
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(run_load(spec, start_at))
    except ImportError:  # pragma: no cover - uvloop is installed with uvicorn[standard]
        return asyncio.run(run_load(spec, start_at))


async def run_load_processes(spec: LoadSpec, processes: int) -> LoadResult:
    """Split ``spec.connections`` over ``processes`` client processes and merge their results."""
    if processes <= 1 or spec.connections < 2:
        return await run_load(spec)
    processes = min(processes, spec.connections)
    share = [spec.connections // processes + (i < spec.connections % processes) for i in range(processes)]
    ctx = multiprocessing.get_context("forkserver")
    start_at = time.time() + 1.0  # client processes need time to start
    loop = asyncio.get_running_loop()
    with ctx.Pool(processes) as pool:
        pending = [pool.apply_async(_process_main, (_with_connections(spec, n), start_at)) for n in share]
        parts = [await loop.run_in_executor(None, p.get) for p in pending]
    merged = LoadResult()
    for part in parts:
        merged.merge(part)
    return merged


def _with_connections(spec: LoadSpec, n: int) -> LoadSpec:
    return dataclasses.replace(spec, connections=n)
