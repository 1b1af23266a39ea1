"""Tasks finished per second over the last minute: a ring of per-second counts, for the sparkline.

It is fed from the server's counters (how many finished between two snapshots), not from the
change feed, so it stays right when the feed runs behind a busy server.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Throughput"]


class Throughput:
    """Counts of finished tasks per whole second, for the last ``window`` seconds."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self._buckets: deque[tuple[int, int]] = deque()

    def add(self, at: float, count: int = 1) -> None:
        second = int(at)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + count)
        elif not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append((second, count))
        else:  # a late change: fold it into its second when still in the window
            for index, (bucket_second, value) in enumerate(self._buckets):
                if bucket_second == second:
                    self._buckets[index] = (second, value + count)
                    break
        self._forget(second)

    def add_span(self, start: float, end: float, count: int) -> None:
        """``count`` tasks finished between ``start`` and ``end``: spread them evenly over that span."""
        if count <= 0:
            return
        if end - start < 1e-6:
            self.add(end, count)
            return
        seconds = range(int(start), int(end) + 1)
        shares = [min(end, s + 1) - max(start, s) for s in seconds]
        total = sum(shares)
        given = 0
        for second, share in zip(seconds, shares, strict=True):
            part = round(count * share / total) if second != int(end) else count - given
            part = min(part, count - given)
            if part > 0:
                self.add(float(second), part)
                given += part

    def _forget(self, now_second: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_second - self.window:
            self._buckets.popleft()

    def series(self, now: float) -> list[float]:
        """One value per second, oldest first, ``window`` values ending with the second before ``now``."""
        last = int(now) - 1
        self._forget(last + 1)
        by_second = dict(self._buckets)
        return [float(by_second.get(second, 0)) for second in range(last - self.window + 1, last + 1)]

    def rate(self, now: float, seconds: int = 5) -> float:
        """Tasks per second over the last ``seconds`` full seconds."""
        values = self.series(now)[-seconds:]
        return sum(values) / len(values) if values else 0.0

    def active(self, now: float) -> bool:
        """Whether anything finished within the window (the sparkline still moves)."""
        return bool(self._buckets) and self._buckets[-1][0] > int(now) - self.window
