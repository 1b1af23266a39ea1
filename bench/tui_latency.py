"""How `llamactl tui` holds up while the server runs tasks flat out: key latency and memory.

    python -m bench.tui_latency                  # 3 minutes of load, prints a table
    python -m bench.tui_latency --duration 60    # shorter
    python -m bench.tui_latency --quick          # smoke run (figures are meaningless)

It starts `llamactl serve` on the benchmark deployment (``bench/deployment.py``), measures what
the server does alone under the load for 15 s (so the dashboard's own cost to the server shows),
then opens the dashboard in this process (Textual's headless driver, 160x48, the same app and workers as in a
terminal), and drives `tasks/run` of the function echo service from client processes (closed
loop). While the load runs it presses keys as a terminal would (a Key event to the app) and
times each one until its effect is done *and painted*:

* ``down``/``up`` in the tasks table: until the cursor is on the next row and the screen has
  been refreshed;
* ``?`` and ``escape``: until the help screen is open (then closed) and painted.

The same presses are timed first with the server idle (same run) for comparison. Memory is the
dashboard process's RSS, sampled every second: after the first snapshot, after one minute of
load, at the end, and the peak. Timings on a shared 2-core machine are noisy; this is a
benchmark, not a test, and it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import forkserver, resource_tracker
from pathlib import Path
from typing import Any

from textual import events

from bench.deployment import DEPLOYMENT, write_deployment
from bench.http_client import build_request
from bench.load import LoadResult, LoadSpec, run_load_processes
from bench.measure import ECHO_BODY, ECHO_RESULT, wait_first_success
from bench.server_proc import ServerProcess
from bench.synthetic_api import SyntheticDeployment
from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.dialogs.help import HelpScreen
from llamactl.tui.feed import Feed
from llamactl.tui.tasks.table import TasksTable

__all__ = ["main"]


@dataclass
class Options:
    duration: float = 180.0
    connections: int = 16
    client_processes: int = 2
    key_every: float = 1.0
    idle_presses: int = 20
    alone: float = 15.0
    synthetic: float = 0.0
    """Tasks/s of an in-memory API instead of a real server (0: a real server)."""


@dataclass
class Figures:
    idle_move: list[float] = field(default_factory=list)
    idle_help: list[float] = field(default_factory=list)
    load_move: list[float] = field(default_factory=list)
    load_help: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(seconds into the load, MB)."""
    rss_start: float = 0.0
    cpu_seconds: float = 0.0
    load: LoadResult | None = None
    alone: LoadResult | None = None
    """The same load for a few seconds before the dashboard opens: what the server does alone."""
    seen_rate: float = 0.0
    """Tasks/s the dashboard's own meter showed near the end."""
    kept: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    offered: float = 0.0
    """Synthetic runs: tasks/s the in-memory API reported."""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _painted(app: DashboardApp) -> None:
    done = asyncio.Event()
    app.call_after_refresh(done.set)
    await done.wait()


async def press(app: DashboardApp, key: str, character: str | None, effect: Callable[[], bool]) -> float:
    """Seconds from a key arriving (as from the terminal) to its effect being done and painted."""
    started = time.perf_counter()
    app.post_message(events.Key(key, character))
    deadline = started + 30
    while not effect():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the key {key!r} had no effect within 30 s")
        await asyncio.sleep(0.0005)
    await _painted(app)
    return time.perf_counter() - started


async def move_cursor(app: DashboardApp, table: TasksTable, down: bool) -> float | None:
    before = table.cursor_key
    if before is None or len(table.keys) < 2:
        return None
    key = "down" if down else "up"
    index = table.keys.index(before) if before in table.keys else 0
    if (down and index >= len(table.keys) - 1) or (not down and index == 0):
        key = "up" if down else "down"
    return await press(app, key, None, lambda: table.cursor_key != before)


async def toggle_help(app: DashboardApp) -> float:
    opened = await press(app, "question_mark", "?", lambda: isinstance(app.screen, HelpScreen))
    await press(app, "escape", None, lambda: not isinstance(app.screen, HelpScreen))
    return opened


async def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def drive(
    app: DashboardApp, figures: Figures, opts: Options, start_load: Callable[[], asyncio.Task[Any]]
) -> None:
    """Time key presses on the open dashboard: a few idle, then once a second while the load runs."""
    feed = app.screen.query_one(Feed)
    table = app.screen.query_one(TasksTable)
    await _wait(lambda: feed.connected, "the connection")
    table.focus()
    figures.rss_start = rss_mb()
    for n in range(opts.idle_presses):
        latency = await move_cursor(app, table, down=n % 2 == 0)
        if latency is not None:
            figures.idle_move.append(latency)
        if n % 4 == 0:
            figures.idle_help.append(await toggle_help(app))
        await asyncio.sleep(0.2)
    load = start_load()
    started = time.monotonic()
    cpu0 = time.process_time()
    tick = 0
    while not load.done():
        await asyncio.sleep(opts.key_every)
        tick += 1
        figures.rss.append((time.monotonic() - started, rss_mb()))
        latency = await move_cursor(app, table, down=tick % 2 == 0)
        if latency is not None:
            figures.load_move.append(latency)
        if tick % 5 == 0:
            figures.load_help.append(await toggle_help(app))
        if time.monotonic() - started < opts.duration:
            figures.seen_rate = app.model.throughput.rate(app.model.now())
    figures.cpu_seconds = time.process_time() - cpu0
    figures.elapsed = time.monotonic() - started
    figures.kept = {
        "tasks": len(app.model.tasks),
        "task cap": app.config.max_tasks,
        "sessions": len(app.model.sessions),
        "session cap": app.config.max_sessions,
        "table rows": len(table.keys),
    }


async def run_synthetic(opts: Options) -> Figures:
    """The dashboard on an in-memory API whose tasks finish at ``opts.synthetic`` per second."""
    figures = Figures()
    api = SyntheticDeployment(opts.synthetic)
    app = DashboardApp(DashboardConfig(deployment=api.name), client=api.client())
    async with app.run_test(size=(160, 48)):
        api.start()
        await _wait(lambda: api.finished > 50, "a few tasks")
        api.stop()

        def start_load() -> asyncio.Task[None]:
            api.start()
            return asyncio.create_task(asyncio.sleep(opts.duration))

        await drive(app, figures, opts, start_load)
        api.stop()
        figures.offered = api.finished / max(figures.elapsed, 1e-9)
    return figures


async def run(opts: Options) -> Figures:
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="llamactl-tui-bench-") as tmp:
        file = write_deployment(Path(tmp))
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
        async with ServerProcess(argv, cwd=Path(tmp), start_timeout=120) as server:
            path = f"/deployments/{DEPLOYMENT}/tasks/run"
            await wait_first_success(server.host, server.port, path, ECHO_BODY)
            for _ in range(20):  # a few rows to move through before the load starts
                await wait_first_success(server.host, server.port, path, ECHO_BODY)
            request = build_request("POST", server.host, server.port, path, ECHO_BODY)
            spec = LoadSpec(
                server.host,
                server.port,
                request,
                expect_body=ECHO_RESULT,
                connections=opts.connections,
                duration=opts.duration,
                warmup=2.0,
                server_pid=server.pid,
            )
            figures.alone = await run_load_processes(
                dataclasses.replace(spec, duration=opts.alone), opts.client_processes
            )
            url = f"http://{server.host}:{server.port}"
            # The load's client processes need these helpers; start them before Textual replaces
            # stdout and stderr, whose descriptors they would otherwise be handed.
            resource_tracker.ensure_running()
            forkserver.ensure_running()
            app = DashboardApp(DashboardConfig(server=url, deployment=DEPLOYMENT))
            async with app.run_test(size=(160, 48)):
                load_task: asyncio.Task[LoadResult] | None = None

                def start_load() -> asyncio.Task[LoadResult]:
                    nonlocal load_task
                    load_task = asyncio.create_task(run_load_processes(spec, opts.client_processes))
                    return load_task

                await drive(app, figures, opts, start_load)
                assert load_task is not None
                figures.load = await load_task
    return figures


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms · p95 {p95 * 1000:.1f} ms · "
        f"max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})"
    )


def report(opts: Options, fig: Figures) -> str:
    minute = next((mb for at, mb in fig.rss if at >= 60), None)
    end = fig.rss[-1][1] if fig.rss else float("nan")
    peak = max((mb for _, mb in fig.rss), default=float("nan"))
    busy = fig.cpu_seconds / max(fig.elapsed, 1e-9)
    if opts.synthetic:
        lines = [
            f"synthetic API in this process: {fig.offered:,.0f} tasks/s finished for {fig.elapsed:.0f} s "
            f"({3 * fig.offered:,.0f} changes/s on the feed)",
        ]
    else:
        load, alone = fig.load, fig.alone
        assert load is not None and alone is not None
        lines = [
            f"server alone (before the dashboard opens): {alone.rate:,.0f} tasks/s for {alone.elapsed:.0f} s "
            f"(other load on the machine {alone.foreign_cores:.2f} cores)",
            f"load with the dashboard open: {load.rate:,.0f} tasks/s for {load.elapsed:.0f} s "
            f"({opts.connections} connections over {opts.client_processes} processes; {load.errors} errors; "
            f"other load on the machine {load.foreign_cores:.2f} cores)",
        ]
    lines += [
        f"dashboard's own meter near the end: {fig.seen_rate:,.0f} tasks/s",
        f"key → done and painted, tasks cursor, idle:          {_ms(fig.idle_move)}",
        f"key → done and painted, tasks cursor, under load:    {_ms(fig.load_move)}",
        f"key → help screen painted, idle:                     {_ms(fig.idle_help)}",
        f"key → help screen painted, under load:               {_ms(fig.load_help)}",
        f"dashboard RSS: {fig.rss_start:.0f} MB before the load, "
        + (f"{minute:.0f} MB after 1 min, " if minute is not None else "")
        + f"{end:.0f} MB at the end, peak {peak:.0f} MB",
        f"dashboard CPU under load: {busy * 100:.0f} % of a core (this process)",
        "kept at the end: " + ", ".join(f"{k} {v:,}" for k, v in fig.kept.items()),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.tui_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    parser.add_argument("--connections", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--client-processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--synthetic",
        type=float,
        default=0.0,
        metavar="RATE",
        help="an in-memory API finishing RATE tasks/s instead of a real server",
    )
    parser.add_argument("--quick", action="store_true", help="10 s of load, few presses: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        return Options(
            duration=10,
            connections=args.connections,
            client_processes=args.client_processes,
            idle_presses=4,
            alone=3,
            synthetic=args.synthetic,
        )
    return Options(
        duration=args.duration,
        connections=args.connections,
        client_processes=args.client_processes,
        synthetic=args.synthetic,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    figures = asyncio.run(run_synthetic(opts) if opts.synthetic else run(opts))
    print(report(opts, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
