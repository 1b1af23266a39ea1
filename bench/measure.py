"""Measurements the benchmark makes against a running server."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.http_client import HttpConnection, HttpError, build_request
from bench.load import LoadResult, LoadSpec, run_load_processes
from bench.stats import Summary, summarize

__all__ = [
    "ECHO_BODY",
    "ECHO_RESULT",
    "Throughput",
    "first_event_latency",
    "help_seconds",
    "measure_endpoint",
    "wait_first_success",
]

ECHO_BODY = {"input": json.dumps({"message": "hi"}), "service_id": "echo"}
ECHO_RESULT = b'"Message received: hi"'


@dataclass(slots=True)
class Throughput:
    """Sequential latency (the 1-client run) and rate per client count for one endpoint."""

    sequential: Summary | None = None
    rates: dict[int, float] = field(default_factory=dict)
    errors: int = 0
    client_cpu_share: dict[int, float] = field(default_factory=dict)
    """Client CPU seconds per second of each run (how close the client came to a full core)."""
    server_cpu_ms: dict[int, float] = field(default_factory=dict)
    """Server (+ workers) CPU milliseconds per successful request."""
    foreign_cores: dict[int, float] = field(default_factory=dict)
    """Cores used by other work on the machine during each run."""
    steal_cores: dict[int, float] = field(default_factory=dict)
    loaded: dict[int, Summary] = field(default_factory=dict)
    """Latency percentiles of each run, by client count."""
    first_error: str | None = None


async def measure_endpoint(
    host: str,
    port: int,
    path: str,
    body: dict[str, str],
    *,
    clients: Sequence[int],
    duration: float,
    warmup: float,
    processes: int = 1,
    expect_body: bytes = ECHO_RESULT,
    server_pid: int | None = None,
) -> Throughput:
    """Closed-loop runs at each client count; the 1-client run gives the sequential latency."""
    raw = build_request("POST", host, port, path, body)
    out = Throughput()
    for n in clients:
        spec = LoadSpec(host, port, raw, 200, expect_body, n, duration, warmup, server_pid)
        result: LoadResult = await run_load_processes(spec, processes if n > 1 else 1)
        out.rates[n] = result.rate
        out.errors += result.errors
        out.first_error = out.first_error or result.first_error
        out.client_cpu_share[n] = result.client_cpu / result.elapsed if result.elapsed else math.nan
        done = len(result.latencies)
        out.server_cpu_ms[n] = result.server_cpu / done * 1000 if done else math.nan
        out.foreign_cores[n] = result.foreign_cores
        out.steal_cores[n] = result.steal / result.elapsed if result.elapsed else math.nan
        out.loaded[n] = result.summary()
        if n == 1:
            out.sequential = result.summary()
    return out


async def wait_first_success(
    host: str,
    port: int,
    path: str,
    body: dict[str, str],
    *,
    timeout: float = 60.0,
    attempt_timeout: float | None = None,
) -> float:
    """Retry ``POST path`` until it answers 200; return ``time.perf_counter()`` at that moment.

    ``attempt_timeout`` gives up on one request after that many seconds and sends another (a
    server that loses requests made while it starts, as Llama Deploy 0.8 does, never answers them).
    """
    deadline = time.perf_counter() + timeout
    conn = HttpConnection(host, port)
    last = ""
    try:
        while time.perf_counter() < deadline:
            try:
                async with asyncio.timeout(attempt_timeout):
                    response = await conn.request("POST", path, body)
            except (HttpError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                await conn.close()
            else:
                if response.status == 200:
                    return time.perf_counter()
                last = f"{response.status} {response.body[:300]!r}"
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    raise TimeoutError(f"POST {path} did not succeed within {timeout}s (last answer: {last})")


async def first_event_latency(host: str, port: int, deployment: str, service: str, runs: int) -> Summary:
    """Seconds from ``tasks/create`` to the first NDJSON line of ``GET .../events``, per task."""
    conn = HttpConnection(host, port)
    body = {"input": json.dumps({"count": 3}), "service_id": service}
    samples: list[float] = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            created = await conn.request("POST", f"/deployments/{deployment}/tasks/create", body)
            if created.status != 200:
                raise HttpError(f"tasks/create answered {created.status}: {created.body[:300]!r}")
            task = created.json()
            path = f"/deployments/{deployment}/tasks/{task['task_id']}/events?session_id={task['session_id']}"
            first: float | None = None
            async for status, line in conn.stream_lines("GET", path):
                if status != 200:
                    raise HttpError(f"GET events answered {status}: {line[:300]!r}")
                if first is None and line.strip():
                    first = time.perf_counter() - started
            if first is None:
                raise HttpError("the event stream ended without a line")
            samples.append(first)
    finally:
        await conn.close()
    return summarize(samples)


def help_seconds(runs: int) -> float:
    """Mean wall time of ``llamactl --help`` (the console script next to this interpreter)."""
    script = Path(sys.executable).with_name("llamactl")
    argv = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "llamactl", "--help"]
    total = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total += time.perf_counter() - started
    return total / runs
