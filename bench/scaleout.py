"""How throughput scales with worker processes and servers, on the embedded default and on
PostgreSQL + Redis.

``python -m bench.scaleout [--duration 5] [--workers 1,2,4] [--connections 32]`` runs closed-loop
``tasks/run`` load (function echo, then workflow echo) against:

* ``embedded``: one ``llamactl serve`` on the defaults (SQLite + the embedded ZeroMQ broker);
* ``pg+redis, 1 server``: one server, state in PostgreSQL, queue in Redis;
* ``pg+redis, 2 servers``: two servers of one deployment on different ports sharing both, the load
  split evenly between them, the worker processes split between them (a server may run none:
  ``replicas: 0``).

with 1, 2 and 4 worker processes per service in all, and prints tasks/s per configuration and
the ratio to the embedded one with as many workers. Needs PostgreSQL and Redis on 127.0.0.1 (the
same as the tests: ``LLAMACTL_TEST_POSTGRES``, ``LLAMACTL_TEST_REDIS_URL``); each run uses a fresh
schema and key prefix and removes them. A benchmark, not a test: it prints figures and asserts
nothing. On a small machine the servers, the workers and the load generator share the cores, so
read the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from bench.deployment import DEPLOYMENT, write_deployment
from bench.http_client import build_request
from bench.load import LoadSpec, run_load
from bench.measure import ECHO_BODY, wait_first_success
from bench.server_proc import ServerProcess

POSTGRES = os.environ.get("LLAMACTL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LLAMACTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_RUN = f"/deployments/{DEPLOYMENT}/tasks/run"
_BODIES = {"function": ECHO_BODY, "workflow": {**ECHO_BODY, "service_id": "wf"}}
_EXPECT = b'"Message received: hi"'


@dataclass(frozen=True, slots=True)
class Setup:
    label: str
    shared: bool
    servers: int


SETUPS = (
    Setup("embedded", False, 1),
    Setup("pg+redis, 1 server", True, 1),
    Setup("pg+redis, 2 servers", True, 2),
)


def _deployment(folder: Path, replicas: int, schema: str | None, prefix: str | None) -> Path:
    file = write_deployment(folder, replicas=replicas)
    if schema is not None:
        shared = (
            f"control-plane:\n  state_store_uri: {POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={schema}\n"
            f"message-queue:\n  type: redis\n  url: {REDIS}\n  prefix: '{prefix}'\n"
        )
        file.write_text(file.read_text().replace("services:\n", shared + "services:\n", 1))
    return file


@contextlib.asynccontextmanager
async def _servers(setup: Setup, workers: int, tmp: Path) -> AsyncIterator[list[ServerProcess]]:
    schema = f"bench_{uuid.uuid4().hex[:12]}" if setup.shared else None
    prefix = f"llamactl-bench-{uuid.uuid4().hex[:12]}:" if setup.shared else None
    split = [
        workers // setup.servers + (1 if i < workers % setup.servers else 0) for i in range(setup.servers)
    ]
    started: list[ServerProcess] = []
    try:
        for i, replicas in enumerate(split):
            file = _deployment(tmp / f"server{i}", replicas, schema, prefix)
            argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
            server = ServerProcess(argv, cwd=tmp, start_timeout=120)
            await server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            await server.stop()
        if schema is not None:
            conn = await asyncpg.connect(POSTGRES)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        if prefix is not None:
            client = aioredis.from_url(REDIS)
            try:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
                if keys:
                    await client.unlink(*keys)
            finally:
                await client.aclose()


async def _rate(
    servers: list[ServerProcess], body: dict[str, str], connections: int, duration: float
) -> float:
    """Tasks/s of closed-loop load split evenly over the servers, all measured over one window."""
    per = max(1, connections // len(servers))
    specs = [
        LoadSpec(
            s.host,
            s.port,
            build_request("POST", s.host, s.port, _RUN, body),
            200,
            _EXPECT,
            per,
            duration,
            1.0,
        )
        for s in servers
    ]
    results = await asyncio.gather(*(run_load(spec) for spec in specs))
    errors = sum(r.errors for r in results)
    if errors:
        first = next(r.first_error for r in results if r.first_error)
        print(f"    ({errors} errors; first: {first})", file=sys.stderr)
    return sum(r.rate for r in results)


async def run(workers: Sequence[int], connections: int, duration: float) -> dict[tuple[str, str, int], float]:
    rates: dict[tuple[str, str, int], float] = {}
    for n in workers:
        for setup in SETUPS:
            with tempfile.TemporaryDirectory(prefix="llamactl-scaleout-") as tmp:
                async with _servers(setup, n, Path(tmp)) as servers:
                    for server in servers:
                        await wait_first_success(server.host, server.port, _RUN, ECHO_BODY)
                    for kind, body in _BODIES.items():
                        rate = await _rate(servers, body, connections, duration)
                        rates[(setup.label, kind, n)] = rate
                        print(
                            f"  {setup.label:<22} {kind:<8} {n} worker(s): {rate:8.0f} tasks/s",
                            file=sys.stderr,
                        )
    return rates


def render(rates: dict[tuple[str, str, int], float], workers: Sequence[int]) -> str:
    lines = [
        "| setup | service | " + " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in workers) + " |",
        "|---|---|" + "---|" * len(workers),
    ]
    for setup in SETUPS:
        for kind in _BODIES:
            cells = []
            for n in workers:
                rate = rates.get((setup.label, kind, n))
                base = rates.get(("embedded", kind, n))
                if rate is None:
                    cells.append("")
                elif setup.label == "embedded" or not base:
                    cells.append(f"{rate:,.0f}/s")
                else:
                    cells.append(f"{rate:,.0f}/s ({rate / base:.2f}x)")
            lines.append(f"| {setup.label} | {kind} echo | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per figure (default 5)")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per service (default 1,2,4)")
    parser.add_argument("--connections", type=int, default=32, help="client connections in all (default 32)")
    ns = parser.parse_args(argv)
    workers = [int(n) for n in ns.workers.split(",")]
    rates = asyncio.run(run(workers, ns.connections, ns.duration))
    print(render(rates, workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
