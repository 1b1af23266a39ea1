"""Alternating rounds and the medians kept of them (no servers, no timing)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from bench.measure import Throughput
from bench.rounds import alternate, median_of, median_summary, median_throughput
from bench.stats import summarize


async def test_each_round_rotates_the_order() -> None:
    calls: list[str] = []

    def measure(name: str, value: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            calls.append(name)
            return value * (len(calls))

        return run

    lines: list[str] = []
    done = await alternate(
        3, {"a": measure("a", 1), "b": measure("b", 10), "c": measure("c", 100)}, say=lines.append
    )
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert done == {"a": [1, 6, 8], "b": [20, 40, 90], "c": [300, 500, 700]}
    assert lines[1] == "round 2 of 3: b, c, a"


def test_medians_skip_missing_values() -> None:
    assert median_of([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert math.isnan(median_of([math.nan]))
    assert median_summary([None, None]) is None
    merged = median_summary([summarize([0.001] * 3), None, summarize([0.003] * 5), summarize([0.002])])
    assert merged is not None
    assert merged.count == 9
    assert merged.p50 == pytest.approx(0.002)


def test_median_throughput_takes_each_figure_on_its_own() -> None:
    runs = [
        Throughput(
            sequential=summarize([0.001]), rates={1: 100.0, 8: 800.0}, errors=1, server_cpu_ms={8: 1.0}
        ),
        Throughput(sequential=summarize([0.005]), rates={1: 300.0, 8: 400.0}, server_cpu_ms={8: 3.0}),
        Throughput(
            sequential=summarize([0.002]),
            rates={1: 200.0, 8: 600.0, 32: 900.0},
            errors=2,
            server_cpu_ms={8: 2.0},
            first_error="boom",
        ),
    ]
    merged = median_throughput(runs)
    assert merged.sequential is not None and merged.sequential.p50 == pytest.approx(0.002)
    assert merged.rates == {1: 200.0, 8: 600.0, 32: 900.0}  # 32: measured once, kept as it is
    assert merged.server_cpu_ms == {8: 2.0}
    assert merged.errors == 3
    assert merged.first_error == "boom"
    assert median_throughput(runs[:1]) is runs[0]
