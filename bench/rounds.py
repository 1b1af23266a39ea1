"""Measure several servers in alternating rounds and keep the median of each figure.

A machine's speed drifts over minutes (another tenant, the CPU's clock): measured one after the
other, the first product and the last see different machines and their ratio says so. Here each
round measures every product once, in an order that rotates from round to round, and each figure
is the median over the rounds, so drift spreads over all products alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from bench.measure import Throughput
from bench.stats import Summary

__all__ = ["alternate", "median_of", "median_summary", "median_throughput"]

T = TypeVar("T")


async def alternate(
    rounds: int, measures: Mapping[str, Callable[[], Awaitable[T]]], *, say: Callable[[str], None] = print
) -> dict[str, list[T]]:
    """Run every measure once per round, the order rotated by one each round; each one's results."""
    names = list(measures)
    out: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        say(f"round {r + 1} of {rounds}: {', '.join(order)}")
        for name in order:
            out[name].append(await measures[name]())
    return out


def median_of(values: Sequence[float]) -> float:
    """The median of the values that are not NaN (NaN if none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def median_summary(summaries: Sequence[Summary | None]) -> Summary | None:
    """Each percentile's median over the runs; the counts add up."""
    present = [s for s in summaries if s is not None]
    if not present:
        return None
    return Summary(
        sum(s.count for s in present),
        median_of([s.p50 for s in present]),
        median_of([s.p90 for s in present]),
        median_of([s.p99 for s in present]),
        median_of([s.mean for s in present]),
    )


def _median_map(maps: Sequence[dict[int, float]]) -> dict[int, float]:
    keys = sorted({k for m in maps for k in m})
    return {k: median_of([m[k] for m in maps if k in m]) for k in keys}


def median_throughput(runs: Sequence[Throughput]) -> Throughput:
    """One Throughput whose every figure is the median over ``runs`` (errors add up)."""
    if len(runs) == 1:
        return runs[0]
    loaded_keys = sorted({k for t in runs for k in t.loaded})
    loaded = {k: median_summary([t.loaded.get(k) for t in runs]) for k in loaded_keys}
    return Throughput(
        sequential=median_summary([t.sequential for t in runs]),
        rates=_median_map([t.rates for t in runs]),
        errors=sum(t.errors for t in runs),
        client_cpu_share=_median_map([t.client_cpu_share for t in runs]),
        server_cpu_ms=_median_map([t.server_cpu_ms for t in runs]),
        foreign_cores=_median_map([t.foreign_cores for t in runs]),
        steal_cores=_median_map([t.steal_cores for t in runs]),
        loaded={k: s for k, s in loaded.items() if s is not None},
        first_error=next((t.first_error for t in runs if t.first_error), None),
    )
