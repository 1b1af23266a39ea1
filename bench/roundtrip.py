"""``python -m bench.roundtrip``: llamactl's task round trip against a bare uvicorn baseline.

Measures, in one run and on the same client: a bare Starlette endpoint and the echo workflow
run inside a handler (the baselines), the same two forwarded to a worker process over ZeroMQ
with nothing else (the floor any out-of-process design pays), the floor storing each task before
and its answer after (the durable floor: what losing no task costs at the least), then a real
``llamactl serve`` subprocess (function echo, workflow echo, first streamed event, start to ready,
peak RSS, idle CPU), plus ``llamactl --help``. The four servers are measured in alternating
rounds (``--rounds``), each figure the median of its rounds (see :mod:`bench.servers`). Prints
each figure with its ratio to the baseline and the target it must meet.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.cached_env import byte_compile
from bench.measure import Throughput, help_seconds
from bench.reload import ReloadOptions, measure_reload
from bench.reload import figures as reload_figures
from bench.report import Figure, render_json, render_table
from bench.rounds import alternate
from bench.servers import ServerFigures, measure_baseline, measure_floor, measure_llamactl, median_figures

__all__ = ["Measured", "Options", "build_figures", "main", "parse_args", "run"]

_MB = 1024 * 1024
_CPU_TARGET_MS = {"function": 0.15, "workflow": 0.30}
"""Server + worker CPU per task: half of what the performance issue measured (0.3 / 0.6 ms)."""


@dataclass(frozen=True, slots=True)
class Options:
    """What to run and for how long."""

    duration: float = 2.0
    warmup: float = 0.4
    clients: tuple[int, ...] = (1, 8, 32)
    replicas: int = 1
    max_concurrency: int = 64
    client_processes: int = 1
    idle: float = 5.0
    help_runs: int = 10
    event_runs: int = 30
    reload_runs: int = 5
    reloads: int = 20
    reload_clients: int = 8
    anchor: bool = False
    """Also measure Llama Deploy 0.9.2 and 0.8.1 (installed once into a cached venv)."""
    rounds: int = 3
    """Each server (and with ``anchor`` each product) measured once per round, in rotating order;
    each figure the median of its rounds."""
    json: bool = False


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Measured:
    """The four servers' figures (each the median of its rounds)."""

    base: ServerFigures
    floor: ServerFigures
    durable: ServerFigures
    ours: ServerFigures

    def runs(self) -> dict[str, Throughput]:
        """Each load run by its figures' key prefix."""
        return {
            "baseline.echo": self.base.function,
            "baseline.workflow": self.base.workflow,
            "floor.echo": self.floor.function,
            "floor.workflow": self.floor.workflow,
            "durable_floor.echo": self.durable.function,
            "durable_floor.workflow": self.durable.workflow,
            "llamactl.function": self.ours.function,
            "llamactl.workflow": self.ours.workflow,
        }


def _other_load(fig: Figure, runs: dict[str, Throughput]) -> Figure:
    """``fig`` with the machine's other load during the run that measured it."""
    for name, run in runs.items():
        if fig.key.startswith(prefix := name + "."):
            metric = fig.key.removeprefix(prefix)
            clients = 1 if metric.startswith(("p50", "p99")) else int(metric.rsplit("_", 1)[1])
            return dataclasses.replace(fig, other_load=run.foreign_cores.get(clients))
    return fig


def _at_most(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) or math.isnan(limit) else value <= limit


def _at_least(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) or math.isnan(limit) else value >= limit


def _clients(n: int) -> str:
    return "1 client" if n == 1 else f"{n} clients"


def _seq(t: Throughput, attr: str) -> float:
    return math.nan if t.sequential is None else float(getattr(t.sequential, attr)) * 1000


@dataclass(frozen=True, slots=True)
class _Side:
    """One side of a comparison: its figures' key prefix, their label and the load run."""

    key: str
    label: str
    run: Throughput


def _floor_figures(measured: Measured, top: int) -> list[Figure]:
    """The one-hop floor against the bare endpoint or the in-handler workflow (its CPU per task is
    what any design that runs the work in another process spends at the least), then the durable
    floor (each task stored before the hop, its answer after) against the floor: what losing no
    task costs at the least, so a target stated against the floor that the durable floor meets is
    in reach of a design that loses no task."""
    base, floor, durable = measured.base, measured.floor, measured.durable
    pairs = [
        (
            _Side("floor.echo", "floor: one hop to a worker", floor.function),
            _Side("baseline.echo", "bare", base.function),
        ),
        (
            _Side("floor.workflow", "floor: workflow in a worker", floor.workflow),
            _Side("baseline.workflow", "in-handler", base.workflow),
        ),
        (
            _Side("durable_floor.echo", "durable floor: echo", durable.function),
            _Side("floor.echo", "floor", floor.function),
        ),
        (
            _Side("durable_floor.workflow", "durable floor: workflow", durable.workflow),
            _Side("floor.workflow", "floor", floor.workflow),
        ),
    ]
    return [fig for mine, theirs in pairs for fig in _against(mine, theirs, top)]


def _against(mine: _Side, theirs: _Side, top: int) -> list[Figure]:
    """``mine``'s p50, rates and CPU per task, each against ``theirs``, with no target."""
    what = theirs.label
    figs = [
        Figure(
            f"{mine.key}.p50_ms",
            f"{mine.label} p50",
            _seq(mine.run, "p50"),
            "ms",
            f"{theirs.key}.p50_ms",
            f"{what} p50",
            _seq(theirs.run, "p50"),
        )
    ]
    figs += [
        Figure(
            f"{mine.key}.rps_{n}",
            f"{mine.label}, {_clients(n)}",
            rate,
            "/s",
            f"{theirs.key}.rps_{n}",
            what,
            theirs.run.rates.get(n),
        )
        for n, rate in mine.run.rates.items()
    ]
    figs.append(
        Figure(
            f"{mine.key}.server_cpu_ms_{top}",
            f"{mine.label}, CPU per task, server + worker, {_clients(top)}",
            mine.run.server_cpu_ms.get(top, math.nan),
            "ms",
            f"{theirs.key}.server_cpu_ms_{top}",
            what,
            theirs.run.server_cpu_ms.get(top, math.nan),
        )
    )
    return figs


def build_figures(opts: Options, measured: Measured, help_s: float) -> list[Figure]:
    """Every figure of the table, each with its baseline and target."""
    base, floor, ours = measured.base, measured.floor, measured.ours
    top = max(opts.clients)
    figs: list[Figure] = []
    b_p50, b_p99 = _seq(base.function, "p50"), _seq(base.function, "p99")
    bw_p50, bw_p99 = _seq(base.workflow, "p50"), _seq(base.workflow, "p99")
    figs += [
        Figure("baseline.echo.p50_ms", "baseline: bare endpoint p50 (1 client)", b_p50, "ms"),
        Figure("baseline.echo.p99_ms", "baseline: bare endpoint p99 (1 client)", b_p99, "ms"),
    ]
    figs += [
        Figure(f"baseline.echo.rps_{n}", f"baseline: bare endpoint, {_clients(n)}", r, "/s")
        for n, r in base.function.rates.items()
    ]
    figs += [
        Figure("baseline.workflow.p50_ms", "baseline: workflow in handler p50", bw_p50, "ms"),
        Figure("baseline.workflow.p99_ms", "baseline: workflow in handler p99", bw_p99, "ms"),
    ]
    figs += [
        Figure(f"baseline.workflow.rps_{n}", f"baseline: workflow in handler, {_clients(n)}", r, "/s")
        for n, r in base.workflow.rates.items()
    ]
    figs += _floor_figures(measured, top)
    p50, f_p50 = _seq(ours.function, "p50"), _seq(floor.function, "p50")
    figs += [
        Figure(
            "llamactl.function.p50_ms",
            "function echo p50 (1 client)",
            p50,
            "ms",
            "floor.echo.p50_ms",
            "floor p50",
            f_p50,
            "<= 2x floor",
            _at_most(p50, 2 * f_p50),
        ),
        Figure(
            "llamactl.function.p99_ms",
            "function echo p99 (1 client)",
            _seq(ours.function, "p99"),
            "ms",
            "baseline.echo.p99_ms",
            "bare p99",
            b_p99,
        ),
    ]
    for n, rate in ours.function.rates.items():
        goal = n == top and top >= 32
        floor_rate = floor.function.rates.get(n, math.nan)
        figs.append(
            Figure(
                f"llamactl.function.tps_{n}",
                f"function echo, {_clients(n)}",
                rate,
                "/s",
                f"floor.echo.rps_{n}",
                "floor",
                floor_rate,
                ">= 0.5x floor" if goal else "",
                _at_least(rate, 0.5 * floor_rate) if goal else None,
            )
        )
    figs += [
        Figure(
            "llamactl.workflow.p50_ms",
            "workflow echo p50 (1 client)",
            _seq(ours.workflow, "p50"),
            "ms",
            "baseline.workflow.p50_ms",
            "in-handler p50",
            bw_p50,
        ),
        Figure(
            "llamactl.workflow.p99_ms",
            "workflow echo p99 (1 client)",
            _seq(ours.workflow, "p99"),
            "ms",
            "baseline.workflow.p99_ms",
            "in-handler p99",
            bw_p99,
        ),
    ]
    for n, rate in ours.workflow.rates.items():
        bw = base.workflow.rates.get(n, math.nan)
        figs.append(
            Figure(
                f"llamactl.workflow.tps_{n}",
                f"workflow echo, {_clients(n)}",
                rate,
                "/s",
                f"baseline.workflow.rps_{n}",
                "in-handler",
                bw,
                ">= in-handler",
                rate >= bw,
            )
        )
    # Against the floor: where the floor itself spends more than the target, the target is out
    # of reach for any design that runs the work outside the server process.
    for name, mine, theirs, key, limit in (
        ("function", ours.function, floor.function, "echo", _CPU_TARGET_MS["function"]),
        ("workflow", ours.workflow, floor.workflow, "workflow", _CPU_TARGET_MS["workflow"]),
    ):
        cpu_ms = mine.server_cpu_ms.get(top, math.nan)
        figs.append(
            Figure(
                f"llamactl.{name}.server_cpu_ms_{top}",
                f"{name} echo CPU per task, server + workers, {_clients(top)}",
                cpu_ms,
                "ms",
                f"floor.{key}.server_cpu_ms_{top}",
                "floor",
                theirs.server_cpu_ms.get(top, math.nan),
                f"<= {limit:g} ms",
                _at_most(cpu_ms, limit),
            )
        )
    ev = ours.first_event * 1000
    figs += [
        Figure(
            "llamactl.first_event_ms",
            "create -> first streamed event p50",
            ev,
            "ms",
            "baseline.echo.p50_ms",
            "bare p50",
            b_p50,
        ),
        Figure(
            "llamactl.first_event_p99_ms",
            "create -> first streamed event p99",
            ours.first_event_p99 * 1000,
            "ms",
        ),
        Figure(
            "llamactl.start_to_listening_s",
            "start -> Listening line",
            ours.start_seconds,
            "s",
            "baseline.start_to_listening_s",
            "bare uvicorn",
            base.start_seconds,
            "< 1 s",
            ours.start_seconds < 1,
        ),
        Figure(
            "llamactl.start_to_first_task_s",
            "start -> first tasks/run answered",
            ours.first_task_seconds,
            "s",
            "baseline.start_to_listening_s",
            "bare uvicorn",
            base.start_seconds,
            "< 1 s",
            ours.first_task_seconds < 1,
        ),
        Figure(
            "llamactl.help_s",
            "llamactl --help (mean wall)",
            help_s,
            "s",
            target="< 0.25 s",
            met=help_s < 0.25,
        ),
        Figure(
            "llamactl.peak_rss_mb",
            f"peak RSS, server + workers ({ours.usage.processes} proc)",
            ours.usage.peak_rss_bytes / _MB,
            "MB",
            "baseline.peak_rss_mb",
            "bare uvicorn",
            base.usage.peak_rss_bytes / _MB,
        ),
        Figure(
            "llamactl.idle_cpu_s",
            f"idle CPU over {opts.idle:g} s, server + workers",
            ours.idle_cpu,
            "s",
            "baseline.idle_cpu_s",
            "bare uvicorn",
            base.idle_cpu,
            "~0 (< 1% core)",
            ours.idle_cpu < 0.01 * opts.idle,
        ),
    ]
    runs = measured.runs()
    return [_other_load(fig, runs) for fig in figs]


@dataclass(slots=True)
class RunResult:
    """The figures of a run plus what the reader needs to trust them."""

    figures: list[Figure]
    errors: dict[str, int]
    first_errors: dict[str, str]
    client_cpu_share: dict[str, dict[int, float]]
    foreign_cores: dict[str, dict[int, float]]
    steal_cores: dict[str, dict[int, float]]
    wall_seconds: float

    def noise(self) -> str:
        """One line on how much else the machine was doing during the load runs."""
        foreign = max(
            (v for d in self.foreign_cores.values() for v in d.values() if not math.isnan(v)), default=0
        )
        steal = max(
            (v for d in self.steal_cores.values() for v in d.values() if not math.isnan(v)), default=0
        )
        return (
            f"other work on the machine during load runs: up to {foreign:.2f} cores; "
            f"hypervisor steal up to {steal:.2f} cores"
        )

    def details(self, opts: Options) -> dict[str, object]:
        """Everything but the figures, for ``--json``."""
        return {
            "options": {k: getattr(opts, k) for k in Options.__slots__},
            "errors": self.errors,
            "first_errors": self.first_errors,
            "client_cpu_share": self.client_cpu_share,
            "foreign_cores": self.foreign_cores,
            "steal_cores": self.steal_cores,
            "wall_seconds": self.wall_seconds,
        }


async def run(opts: Options) -> RunResult:
    """Measure everything: ``llamactl --help``, the four servers in rounds, reloads, the anchor."""
    started = time.perf_counter()
    help_s = help_seconds(opts.help_runs)
    measures = {
        "baseline": functools.partial(measure_baseline, opts),
        "floor": functools.partial(measure_floor, opts),
        "durable floor": functools.partial(measure_floor, opts, durable=True),
        "llamactl": functools.partial(measure_llamactl, opts),
    }
    rounds = await alternate(opts.rounds, measures, say=_say)
    base, floor, durable, ours = (median_figures(rounds[name]) for name in measures)
    measured = Measured(base=base, floor=floor, durable=durable, ours=ours)
    reload_opts = ReloadOptions(opts.reload_runs, opts.reloads, opts.reload_clients, opts.replicas)
    reloaded = await measure_reload(reload_opts)
    anchored: list[Figure] = []
    if opts.anchor:
        from bench.anchor_run import measure_anchor  # noqa: PLC0415

        anchored = await measure_anchor(
            clients=opts.clients, duration=opts.duration, warmup=opts.warmup, rounds=opts.rounds, say=_say
        )
    runs = measured.runs()
    first_errors = {k: t.first_error for k, t in runs.items() if t.first_error}
    if reloaded.first_error:
        first_errors["llamactl.reload"] = reloaded.first_error
    return RunResult(
        figures=[
            *build_figures(opts, measured, help_s),
            *reload_figures(reload_opts, reloaded),
            *anchored,
        ],
        errors={**{k: t.errors for k, t in runs.items()}, "llamactl.reload": reloaded.failed},
        first_errors=first_errors,
        client_cpu_share={k: t.client_cpu_share for k, t in runs.items()},
        foreign_cores={k: t.foreign_cores for k, t in runs.items()},
        steal_cores={k: t.steal_cores for k, t in runs.items()},
        wall_seconds=time.perf_counter() - started,
    )


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Options from the command line (``--quick`` shrinks every duration for a smoke run)."""
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrip", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per load measurement (default 2)"
    )
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma separated (default 1,8,32)")
    parser.add_argument("--replicas", type=int, default=1, help="worker processes per service (default 1)")
    parser.add_argument(
        "--max-concurrency", type=int, default=64, help="tasks per replica at once (default 64)"
    )
    parser.add_argument(
        "--client-processes", type=int, default=1, help="client processes for multi-client runs (default 1)"
    )
    parser.add_argument(
        "--idle", type=float, default=None, help="seconds of idleness for idle CPU (default 5)"
    )
    parser.add_argument(
        "--reloads", type=int, default=None, help="hot reloads under load (default 20; timed ones: 5)"
    )
    parser.add_argument(
        "--anchor",
        action="store_true",
        help="also measure Llama Deploy 0.9.2 and 0.8.1 on the same workflows (installed once into "
        "a cached virtual environment under $XDG_CACHE_HOME/llamactl-bench; about 4 minutes more)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measure each server (with --anchor: each product too) this many times, alternating, "
        "and keep each figure's median, so that the machine's drift during the run touches all "
        "alike (default 3; --quick: 1)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--quick", action="store_true", help="smoke run: every measurement very short")
    ns = parser.parse_args(argv)
    clients = tuple(sorted({int(c) for c in ns.clients.split(",") if c.strip()} | {1}))
    quick = bool(ns.quick)
    return Options(
        duration=ns.duration if ns.duration is not None else (0.15 if quick else 2.0),
        warmup=0.05 if quick else 0.4,
        clients=clients,
        replicas=ns.replicas,
        max_concurrency=ns.max_concurrency,
        client_processes=ns.client_processes,
        idle=ns.idle if ns.idle is not None else (0.3 if quick else 5.0),
        help_runs=2 if quick else 10,
        event_runs=3 if quick else 30,
        reload_runs=2 if quick else 5,
        reloads=ns.reloads if ns.reloads is not None else (3 if quick else 20),
        anchor=bool(ns.anchor),
        rounds=max(1, ns.rounds) if ns.rounds is not None else (1 if quick else 3),
        json=bool(ns.json),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    opts = parse_args(argv)
    import uvloop  # noqa: PLC0415

    byte_compile()
    result = uvloop.run(run(opts))
    if opts.json:
        print(render_json(result.figures, result.details(opts)))
    else:
        print(render_table(result.figures))
        errors = {k: v for k, v in result.errors.items() if v}
        print(f"\nrequest errors: {errors or 'none'}; wall time {result.wall_seconds:.1f} s")
        print(result.noise())
        for name, first in result.first_errors.items():
            print(f"  first error in {name}: {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
