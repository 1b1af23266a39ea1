"""``python -m bench.ab --a CHECKOUT --b CHECKOUT``: is one commit faster than another?

Both checkouts' ``llamactl serve`` run at once, on the same generated deployment; the load goes
to one, then the other, in short bursts (one second by default), the order swapped each time, and
each B burst is compared with the A burst beside it. On a virtual machine whose speed moves by
±30 % within minutes (and within seconds), two runs one after the other measure the machine; two
bursts side by side measure the commits. Calibrated on 2026-12-02 with the same checkout on both
sides: twenty bursts each gave a median ratio of 0.99 (rate) and 1.00 (CPU per task).

Two servers of one checkout can still differ by up to 10 % for as long as they run (measured
2026-12-06 and 2026-12-07; most likely from where each process lands on a two-core machine with
a load client beside it, not measured apart), so the bursts are spread over ``--pairs`` pairs of
servers started anew, A and B started first in turn, and each pair's own median ratio is printed
beside the overall one.

Printed per client count: each side's median rate, p50 and server CPU per task (server and
workers), the median of the B/A ratios with their interquartile range and how many B bursts were
ahead, the machine's context switches and IPIs per task (counts, not timings: what a change
of wake-ups does shows there even when the rate hides it in noise), and where each side's CPU per
task went: the server's event loop thread, its other threads, its workers, and the load client
(medians; /proc counts in clock ticks, so a one-second burst resolves a few microseconds per
task). A sequential task costs about the sum of the four, since nothing on its path waits on
anything but CPU (bench/README.md, point 14). A checkout is a folder with
llamactl's sources (``git worktree add /tmp/before HEAD~1`` makes one); it is run with this
Python through ``PYTHONPATH``, like the anchor's second environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cached_env import checkout_python
from bench.deployment import ANCHOR_SERVICES, DEFAULT_SERVICES, DEPLOYMENT, BenchService, write_deployment
from bench.http_client import build_request
from bench.load import LoadSpec, run_load
from bench.measure import ECHO_BODY, wait_first_success
from bench.procfs import wakeups
from bench.rounds import median_of
from bench.server_proc import ServerProcess

__all__ = [
    "AB_SERVICES",
    "Burst",
    "Comparison",
    "Target",
    "add_burst_options",
    "alternate",
    "burst",
    "burst_clients",
    "main",
    "serve",
    "shares",
]


AB_SERVICES: dict[str, BenchService] = {
    **DEFAULT_SERVICES,
    "cpu": ANCHOR_SERVICES["cpu"],
    "io": ANCHOR_SERVICES["io"],
}
"""What a comparison can load: the round trip's services and the anchor's CPU and awaited steps
(the CPU step on its own ``replicas: 2``, the others on one worker)."""


@dataclass(frozen=True, slots=True)
class Burst:
    """One burst of load on one server."""

    rate: float
    """Tasks per second."""
    p50_ms: float
    cpu_ms: float
    """Server and worker CPU per task."""
    switches: float
    """The machine's context switches per task."""
    ipis: float
    """The machine's IPIs per task."""
    loop_ms: float = math.nan
    """Of ``cpu_ms``: the server's main thread (its event loop)."""
    threads_ms: float = math.nan
    """Of ``cpu_ms``: the server's other threads (WAL checkpoints, ZeroMQ's I/O threads)."""
    workers_ms: float = math.nan
    """Of ``cpu_ms``: the workers (every process the server started)."""
    client_ms: float = math.nan
    """The load client's own CPU per task (not in ``cpu_ms``)."""


@dataclass(slots=True)
class Comparison:
    """The bursts of both sides at one client count, in the order they were paired."""

    clients: int
    a: list[Burst] = field(default_factory=list)
    b: list[Burst] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    """How many of the bursts each pair of servers gave, in order (empty: one pair gave all)."""

    def ratios(self, attr: str) -> list[float]:
        """B/A of ``attr`` for each pair of bursts."""
        return [getattr(b, attr) / getattr(a, attr) for a, b in zip(self.a, self.b, strict=True)]

    def extend(self, other: Comparison) -> None:
        """Add the bursts of another pair of servers at the same client count."""
        if not self.servers:
            self.servers.append(len(self.a))
        self.a += other.a
        self.b += other.b
        self.servers.append(len(other.a))

    def per_servers(self) -> list[float]:
        """The median B/A rate of each pair of servers' bursts."""
        rates, medians, start = self.ratios("rate"), [], 0
        for n in self.servers or [len(rates)]:
            medians.append(median_of(rates[start : start + n]))
            start += n
        return medians

    def report(self) -> list[str]:
        """The lines printed for this client count."""
        rates = self.ratios("rate")
        q1, _, q3 = statistics.quantiles(rates, n=4) if len(rates) > 1 else rates * 3
        ahead = sum(1 for r in rates if r > 1)

        def side(name: str, bursts: list[Burst]) -> str:
            rate, p50 = median_of([b.rate for b in bursts]), median_of([b.p50_ms for b in bursts])
            cpu, switches = median_of([b.cpu_ms for b in bursts]), median_of([b.switches for b in bursts])
            ipis = median_of([b.ipis for b in bursts])
            return (
                f"  {name} {rate:,.0f}/s, p50 {p50:.3f} ms, CPU {cpu:.3f} ms/task, "
                f"{switches:.1f} switches and {ipis:.2f} IPIs/task"
            )

        p50, cpu = median_of(self.ratios("p50_ms")), median_of(self.ratios("cpu_ms"))
        lines = [
            f"{self.clients} client{'s' if self.clients != 1 else ''}:",
            side("A", self.a),
            side("B", self.b),
            f"  B/A: rate {median_of(rates):.3f} (middle half {q1:.3f}-{q3:.3f}, B ahead in {ahead} of "
            f"{len(rates)}), p50 {p50:.3f}, CPU per task {cpu:.3f}",
        ]
        if len(self.servers) > 1:
            each = ", ".join(f"{r:.3f}" for r in self.per_servers())
            lines.append(f"  B/A rate of each pair of servers: {each}")
        if split := self._split():
            lines.append(f"  CPU per task in ms, A -> B: {split}")
        return lines

    def _split(self) -> str:
        """Where each side's CPU per task went (medians), or "" when it was not measured."""
        parts = []
        for attr, name in _SPLIT:
            a = median_of([getattr(x, attr) for x in self.a])
            b = median_of([getattr(x, attr) for x in self.b])
            if math.isnan(a) or math.isnan(b):
                return ""
            parts.append(f"{name} {a:.3f} -> {b:.3f}")
        return ", ".join(parts)


_SPLIT = (
    ("loop_ms", "server loop"),
    ("threads_ms", "its other threads"),
    ("workers_ms", "workers"),
    ("client_ms", "load client"),
)


@dataclass(frozen=True, slots=True)
class Target:
    """A running server and the raw request its bursts send."""

    process: ServerProcess
    request: bytes


async def serve(
    stack: contextlib.AsyncExitStack,
    checkout: Path,
    service: str,
    events: int | None = None,
    *,
    python: Path | None = None,
    launcher: Sequence[str] = ("-m", "llamactl"),
) -> Target:
    """``llamactl serve`` of ``checkout`` (run by ``python``, by default this one; ``launcher``
    is what runs it: ``bench.stages`` puts its probe there) on the comparison's deployment, its
    requests aimed at ``service``, stopped when ``stack`` closes."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llamactl-ab-")))
    file = write_deployment(folder, services=AB_SERVICES)
    argv = [
        *checkout_python(python or Path(sys.executable), checkout),
        *launcher,
        "serve",
        str(file),
        "--port",
        "0",
    ]
    server = await stack.enter_async_context(ServerProcess(argv, cwd=folder, start_timeout=120))
    path, body = f"/deployments/{DEPLOYMENT}/tasks/run", {**ECHO_BODY, "service_id": service}
    if events is not None:  # how many events the streaming workflow writes per task
        body["input"] = json.dumps({"message": "hi", "count": events})
    await wait_first_success(server.host, server.port, path, body)
    return Target(server, build_request("POST", server.host, server.port, path, body))


async def burst(server: Target, clients: int, seconds: float) -> Burst:
    """``clients`` keep-alive connections sending the target's request for ``seconds``."""
    proc = server.process
    spec = LoadSpec(
        proc.host,
        proc.port,
        server.request,
        connections=clients,
        duration=seconds,
        warmup=0.1,
        server_pid=proc.pid,
    )
    before = wakeups()
    result = await run_load(spec)
    after = wakeups()
    n = len(result.latencies)
    if not n or result.errors:
        raise RuntimeError(
            f"a burst of {clients} clients got {n} answers and {result.errors} errors: {result.first_error}"
        )
    split = result.server_split
    per_task = 1000 / n
    return Burst(
        rate=n / result.elapsed,
        p50_ms=statistics.median(result.latencies) * 1000,
        cpu_ms=result.server_cpu * per_task,
        switches=(after.switches - before.switches) / n,
        ipis=(after.ipis - before.ipis) / n,
        loop_ms=split.loop * per_task if split else math.nan,
        threads_ms=split.threads * per_task if split else math.nan,
        workers_ms=split.workers * per_task if split else math.nan,
        client_ms=result.client_cpu * per_task,
    )


async def alternate(a: Target, b: Target, clients: int, seconds: float, bursts: int) -> Comparison:
    """Warm both targets up at ``clients``, then ``bursts`` bursts each, A and B in turn, the order
    swapped every time."""
    for target in (a, b):  # warm both up at this load before anything counts
        await burst(target, clients, seconds)
    comparison = Comparison(clients)
    for i in range(bursts):
        for side, target in (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a)):
            getattr(comparison, side).append(await burst(target, clients, seconds))
    return comparison


def shares(bursts: int, pairs: int) -> list[int]:
    """``bursts`` spread over ``pairs`` pairs of servers, the first ones taking what is left over."""
    return [bursts // pairs + (i < bursts % pairs) for i in range(pairs)]


async def compare(
    a: Path,
    b: Path,
    *,
    service: str,
    clients: Sequence[int],
    seconds: float,
    bursts: int,
    events: int | None = None,
    pairs: int = 1,
) -> list[Comparison]:
    """Serve both checkouts at once and alternate ``bursts`` bursts per side and client count
    (``events``: how many the ``stream`` service writes per task; 3 when None), spread over
    ``pairs`` pairs of servers started one pair after the other, A and B started first in turn."""
    merged: list[Comparison] = []
    for i, share in enumerate(shares(bursts, pairs)):
        async with contextlib.AsyncExitStack() as stack:
            a_first = i % 2 == 0
            started = [await serve(stack, c, service, events) for c in ((a, b) if a_first else (b, a))]
            first, second = started if a_first else started[::-1]
            done = [await alternate(first, second, n, seconds, share) for n in clients]
        if not merged:
            merged = done
        else:
            for total, more in zip(merged, done, strict=True):
                total.extend(more)
    return merged


def add_burst_options(parser: argparse.ArgumentParser, *, bursts: int, per: str) -> None:
    """``--clients``, ``--seconds`` and ``--bursts`` (default ``bursts`` per ``per``)."""
    parser.add_argument("--clients", default="1,32", help="client counts, comma separated (default 1,32)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per burst (default 1)")
    parser.add_argument("--bursts", type=int, default=bursts, help=f"bursts per {per} (default {bursts})")


def burst_clients(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """The client counts of :func:`add_burst_options`' arguments, once they are checked."""
    if args.bursts < 1 or args.seconds <= 0:
        parser.error("--bursts must be at least 1 and --seconds above 0")
    try:
        return [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients {args.clients!r}: give whole numbers, comma separated")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--b", type=Path, required=True, help="the checkout measured against it")
    parser.add_argument(
        "--service",
        default="echo",
        choices=sorted(AB_SERVICES),
        help="echo, wf, stream, cpu (a ~5 ms CPU step, two workers) or io (a 50 ms await) (default echo)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="with --service stream: events each task writes (default 3); the rate is in tasks",
    )
    add_burst_options(parser, bursts=20, per="side and client count")
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="pairs of servers to spread the bursts over, each started anew (default 2, or 1 with one "
        "burst): two servers of one checkout can differ by up to 10 %% for as long as they run",
    )
    args = parser.parse_args(argv)
    if args.events is not None and (args.service != "stream" or args.events < 1):
        parser.error("--events N (N >= 1) goes with --service stream")
    for name in ("a", "b"):
        checkout: Path = getattr(args, name)
        if not (checkout / "llamactl" / "__init__.py").is_file():
            parser.error(f"--{name} {checkout}: not a llamactl checkout (no llamactl/__init__.py there)")
    clients = burst_clients(parser, args)
    if args.pairs is None:
        args.pairs = min(2, args.bursts)
    if not 1 <= args.pairs <= args.bursts:
        parser.error(
            f"--pairs {args.pairs}: give 1 to --bursts ({args.bursts}), so that each pair has a burst"
        )
    print(f"A {args.a.resolve()}\nB {args.b.resolve()}")
    per_task = f", {args.events} events a task" if args.events is not None else ""
    bursts_line = f"{args.bursts} bursts of {args.seconds:g} s per side and client count"
    servers = f", over {args.pairs} pairs of servers" if args.pairs > 1 else ""
    print(f"service {args.service}{per_task}: {bursts_line}{servers}")
    a, b, service, seconds, bursts = args.a, args.b, args.service, args.seconds, args.bursts
    comparisons = asyncio.run(
        compare(
            a,
            b,
            service=service,
            clients=clients,
            seconds=seconds,
            bursts=bursts,
            events=args.events,
            pairs=args.pairs,
        )
    )
    for comparison in comparisons:
        print("\n".join(comparison.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
