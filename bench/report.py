"""Figures of a run and their rendering as a text table or JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["Figure", "render_json", "render_table"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure, with the baseline it is compared to and the target it must meet."""

    key: str
    label: str
    value: float
    unit: str
    baseline_key: str | None = None
    baseline_label: str = ""
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    """None when the figure has no target."""
    other_load: float | None = None
    """Cores used by other work on the machine while this figure was measured (load runs only)."""

    @property
    def ratio(self) -> float | None:
        """``value / baseline``; None without a usable baseline."""
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline) or math.isnan(self.value):
            return None
        return self.value / self.baseline


def target(check: Callable[[float], bool], value: float) -> bool | None:
    """``check(value)``, or None when the value is missing (NaN)."""
    return None if math.isnan(value) else check(value)


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}{unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.3g} {unit}"


def render_table(figures: Sequence[Figure]) -> str:
    """A fixed-width table: figure, value, baseline, ratio, target, met, other load on the machine."""
    header = ("figure", "value", "baseline (same run)", "ratio", "target", "met", "other load")
    rows = [header]
    for fig in figures:
        base = f"{_number(fig.baseline, fig.unit)} {fig.baseline_label}" if fig.baseline is not None else ""
        ratio = fig.ratio
        met = "" if fig.met is None else ("yes" if fig.met else "NO")
        rows.append(
            (
                fig.label,
                _number(fig.value, fig.unit),
                base.strip(),
                "" if ratio is None else (f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"),
                fig.target,
                met,
                "" if fig.other_load is None or math.isnan(fig.other_load) else f"{fig.other_load:.2f} cores",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i not in {1, 3} else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_json(figures: Sequence[Figure], details: dict[str, object]) -> str:
    """Every figure (with its ratio) keyed by ``key``, plus run details."""
    out: dict[str, object] = {}
    for fig in figures:
        entry = asdict(fig)
        entry["ratio"] = fig.ratio
        for name, value in entry.items():
            if isinstance(value, float) and math.isnan(value):
                entry[name] = None
        out[fig.key] = entry
    return json.dumps({"figures": out, "details": details}, indent=2)
