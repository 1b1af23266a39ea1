"""The median of one server's figures over several rounds (no timing assertions)."""

from __future__ import annotations

import math

from bench.measure import Throughput
from bench.procfs import TreeUsage
from bench.servers import ServerFigures, median_figures
from bench.stats import summarize


def _run(rate: float, rss_mb: int, idle: float, processes: int = 2) -> ServerFigures:
    seconds = [1 / rate] * 3
    t = Throughput(
        sequential=summarize(seconds), rates={1: rate, 32: 2 * rate}, server_cpu_ms={32: 1000 / rate}
    )
    usage = TreeUsage(processes, rss_mb * 1024 * 1024, rate / 100)
    return ServerFigures(t, t, usage, idle, start_seconds=rate / 1000, first_event=1 / rate)


def test_each_figure_is_the_median_of_its_rounds() -> None:
    fig = median_figures([_run(100.0, 90, 0.02), _run(300.0, 110, 0.01, processes=3), _run(200.0, 100, 0.03)])
    assert fig.function.rates == {1: 200.0, 32: 400.0}
    assert fig.workflow.server_cpu_ms[32] == 5.0
    assert fig.function.sequential is not None and fig.function.sequential.p50 == 1 / 200
    assert fig.function.sequential.count == 9  # the latencies of all rounds
    assert fig.usage == TreeUsage(3, 100 * 1024 * 1024, 2.0)
    assert fig.idle_cpu == 0.02
    assert fig.start_seconds == 0.2
    assert fig.first_event == 1 / 200
    assert math.isnan(fig.first_task_seconds)  # measured in no round: stays unknown


def test_one_round_is_kept_as_it_is() -> None:
    only = _run(100.0, 90, 0.02)
    assert median_figures([only]) is only
