"""Percentiles of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "percentile", "summarize"]


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles in seconds (NaN when there were no samples)."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted samples, nearest-rank; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples: Sequence[float]) -> Summary:
    """Count, p50, p90, p99 and mean of ``samples``."""
    ordered = sorted(samples)
    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return Summary(
        len(ordered), percentile(ordered, 50), percentile(ordered, 90), percentile(ordered, 99), mean
    )
