"""The benchmark's command end to end (``--quick``) and its report (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.measure import Throughput
from bench.procfs import TreeUsage, descendants, tree_usage
from bench.report import render_json, render_table
from bench.roundtrip import Measured, Options, build_figures, parse_args
from bench.servers import ServerFigures
from bench.stats import summarize

ROOT = Path(__file__).resolve().parents[2]

LABELS = [
    "baseline: bare endpoint p50 (1 client)",
    "baseline: bare endpoint p99 (1 client)",
    "baseline: bare endpoint, 1 client",
    "baseline: bare endpoint, 8 clients",
    "baseline: bare endpoint, 32 clients",
    "baseline: workflow in handler p50",
    "baseline: workflow in handler, 32 clients",
    "floor: one hop to a worker p50",
    "floor: one hop to a worker, 32 clients",
    "floor: workflow in a worker p50",
    "floor: workflow in a worker, 32 clients",
    "floor: one hop to a worker, CPU per task, server + worker, 32 clients",
    "floor: workflow in a worker, CPU per task, server + worker, 32 clients",
    "durable floor: echo p50",
    "durable floor: echo, 32 clients",
    "durable floor: echo, CPU per task, server + worker, 32 clients",
    "durable floor: workflow p50",
    "durable floor: workflow, 32 clients",
    "function echo p50 (1 client)",
    "function echo p99 (1 client)",
    "function echo, 1 client",
    "function echo, 8 clients",
    "function echo, 32 clients",
    "workflow echo p50 (1 client)",
    "workflow echo, 32 clients",
    "function echo CPU per task, server + workers, 32 clients",
    "workflow echo CPU per task, server + workers, 32 clients",
    "create -> first streamed event p50",
    "start -> Listening line",
    "start -> first tasks/run answered",
    "llamactl --help (mean wall)",
    "peak RSS, server + workers",
    "idle CPU over",
]

RELOAD_LABELS = [
    "reload: save -> new code answers, p50 of 2",
    "reload: save -> new code answers, max of 2",
    "reload: failed tasks during 3 reloads, 8 clients",
    "reload: tasks done during 3 reloads",
    "reload: save -> new code answers under load, p50 of 3",
]


def _figures(rate: float) -> ServerFigures:
    rates = {1: rate, 8: rate, 32: rate}
    t = Throughput(sequential=summarize([0.001, 0.002]), rates=rates, server_cpu_ms={32: 1000 / rate})
    return ServerFigures(t, t, TreeUsage(2, 100 * 1024 * 1024, 1.0), 0.0, 0.5, 0.6, 0.01, 0.02)


def test_quick_run_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.roundtrip", "--quick", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for label in LABELS + RELOAD_LABELS:
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, f"{label!r} missing from:\n{done.stdout}"
        assert "n/a" not in row, row
    assert "request errors: none" in done.stdout  # includes tasks failed during the reloads
    assert "other work on the machine" in done.stdout
    assert "round 2 of 2: floor, durable floor, llamactl, baseline" in done.stderr  # each measured twice


def test_every_figure_has_a_ratio_where_it_has_a_baseline() -> None:
    opts = Options()
    measured = Measured(
        base=_figures(1000.0), floor=_figures(700.0), durable=_figures(560.0), ours=_figures(500.0)
    )
    figures = build_figures(opts, measured, 0.1)
    table = render_table(figures)
    for label in LABELS:
        assert label in table
    data = json.loads(render_json(figures, {"note": "x"}))["figures"]
    assert data["llamactl.function.tps_32"]["ratio"] == 500 / 700  # against the floor
    assert data["floor.echo.rps_32"]["ratio"] == 0.7
    assert data["floor.workflow.rps_32"]["baseline"] == 1000.0
    # the durable floor against the floor: what storing each task and its answer costs at the least
    assert data["durable_floor.echo.rps_32"]["ratio"] == 560 / 700
    assert data["durable_floor.workflow.p50_ms"]["baseline_key"] == "floor.workflow.p50_ms"
    assert data["durable_floor.echo.server_cpu_ms_32"]["value"] == 1000 / 560
    assert data["llamactl.function.tps_32"]["met"] is True  # >= 0.5x the floor
    assert data["llamactl.function.server_cpu_ms_32"]["met"] is False  # 2 ms > 0.15 ms
    # the CPU targets are shown beside the floor's own CPU per task, the least any design pays
    assert data["llamactl.workflow.server_cpu_ms_32"]["baseline"] == 1000 / 700
    assert data["floor.echo.server_cpu_ms_32"]["value"] == 1000 / 700
    assert data["floor.echo.server_cpu_ms_32"]["baseline"] == 1.0  # the bare endpoint's
    assert data["llamactl.workflow.tps_8"]["met"] is False
    assert data["llamactl.help_s"]["met"] is True
    assert data["llamactl.function.p50_ms"]["met"] is True
    assert data["llamactl.idle_cpu_s"]["ratio"] is None  # the baseline used no CPU
    assert all(f.ratio is None or not math.isnan(f.ratio) for f in figures)


def test_options() -> None:
    quick = parse_args(["--quick", "--clients", "32,8", "--replicas", "2"])
    assert quick.clients == (1, 8, 32)
    assert quick.replicas == 2
    assert quick.duration < Options().duration
    assert parse_args(["--duration", "5"]).duration == 5
    assert quick.rounds == 1
    assert parse_args([]).rounds == 3
    assert parse_args(["--anchor", "--rounds", "0"]).rounds == 1


def test_procfs_sees_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())
        usage = tree_usage(os.getpid())
        assert usage.processes >= 2
        assert usage.peak_rss_bytes > 0
        assert usage.cpu_seconds > 0
    finally:
        child.kill()
        child.wait()
