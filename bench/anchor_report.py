"""The anchor's figures: llamactl beside Llama Deploy 0.9.2 and 0.8.1, measured in the same run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.anchor import CPU_CLIENTS, CPU_REPLICAS, IO_CLIENTS, ProductFigures
from bench.measure import Throughput
from bench.report import Figure

__all__ = ["AnchorRun", "SameLibrary", "anchor_figures"]

_MB = 1024 * 1024
_LD = "Llama Deploy 0.9.2"


@dataclass(slots=True)
class SameLibrary:
    """llamactl and the floor measured again on the workflows library Llama Deploy runs."""

    workflows: str
    """The ``llama-index-workflows`` version, Llama Deploy's."""
    ours: ProductFigures
    floor_workflow: Throughput
    floor_cpu: Throughput = field(default_factory=Throughput)
    """The floor's CPU step, forwarded to as many workers as llamactl's replicas."""
    durable_workflow: Throughput = field(default_factory=Throughput)
    """The durable floor's workflow echo (each task stored before, its answer after)."""


@dataclass(slots=True)
class AnchorRun:
    """Both products on the anchor deployment, Llama Deploy 0.8.1, and the one-hop floor."""

    ours: ProductFigures
    theirs: ProductFigures
    legacy: Throughput | None
    floor_workflow: Throughput
    same_library: SameLibrary | None = None
    """Set when llamactl's own environment runs another workflows version than Llama Deploy's."""
    floor_cpu: Throughput = field(default_factory=Throughput)
    """The floor's CPU step, forwarded to as many workers as llamactl's replicas."""
    durable_workflow: Throughput = field(default_factory=Throughput)
    """The durable floor's workflow echo (each task stored before, its answer after)."""


def _p50(t: Throughput) -> float:
    return math.nan if t.sequential is None else t.sequential.p50 * 1000


def _vs(
    key: str, label: str, value: float, unit: str, *, base: tuple[str, float], check: str, limit: float
) -> Figure:
    """``value`` against Llama Deploy's ``base`` (key, value), met when the ratio passes ``check limit``."""
    base_key, base_value = base
    met: bool | None = None
    if not (math.isnan(value) or math.isnan(base_value) or base_value == 0):
        ratio = value / base_value
        met = ratio <= limit if check == "<=" else ratio >= limit
    return Figure(key, label, value, unit, base_key, "LD 0.9.2", base_value, f"{check} {limit:g}x", met)


def anchor_figures(run: AnchorRun) -> list[Figure]:
    """Each figure of llamactl with Llama Deploy's as its baseline and the issue's target as a ratio;
    then the same on Llama Deploy's workflows library, when llamactl's own is another version."""
    theirs = run.theirs
    figs: list[Figure] = [
        Figure("anchor.ld.workflow.p50_ms", f"{_LD}: workflow echo p50", _p50(theirs.workflow), "ms"),
    ]
    figs += [
        Figure(f"anchor.ld.workflow.rps_{n}", f"{_LD}: workflow echo, {n} clients", r, "/s")
        for n, r in theirs.workflow.rates.items()
        if n > 1
    ]
    figs += _floor("anchor", "floor (one hop, nothing stored)", run.floor_workflow, run.floor_cpu, theirs)
    figs += _durable("anchor", "durable floor (stored before and after)", run.durable_workflow, theirs)
    figs += _versus("anchor", "llamactl", run.ours, theirs)
    if run.legacy is not None:
        figs += _versus_legacy(run.ours, run.legacy)
    same = run.same_library
    if same is not None:
        prefix, lib = "anchor.same_library", f"workflows {same.workflows}"
        figs += _floor(prefix, f"floor on {lib}", same.floor_workflow, same.floor_cpu, theirs)
        figs += _durable(prefix, f"durable floor on {lib}", same.durable_workflow, theirs)
        figs += _versus(prefix, f"llamactl on {lib}", same.ours, theirs)
    return figs


def _floor(
    prefix: str, name: str, floor: Throughput, cpu: Throughput, theirs: ProductFigures
) -> list[Figure]:
    """The one-hop floor's workflow echo (p50, throughput) and CPU step (throughput with as many
    workers as llamactl's replicas) against Llama Deploy's: how far the targets are in reach."""
    figs = _workflow_echo(f"{prefix}.floor", name, floor, theirs)
    figs.append(
        Figure(
            f"{prefix}.floor.cpu.tps",
            f"{name}: ~5 ms CPU step, {CPU_CLIENTS} clients ({CPU_REPLICAS} workers)",
            cpu.rates.get(CPU_CLIENTS, math.nan),
            "/s",
            "anchor.ld.cpu.tps",
            "LD 0.9.2",
            theirs.cpu.rates.get(CPU_CLIENTS, math.nan),
        )
    )
    return figs


def _durable(prefix: str, name: str, durable: Throughput, theirs: ProductFigures) -> list[Figure]:
    """The durable floor's workflow echo against Llama Deploy's: where it misses a target, no
    design that stores each task before handing it out and its result before answering meets it."""
    return _workflow_echo(f"{prefix}.durable_floor", name, durable, theirs)


def _workflow_echo(key: str, name: str, run: Throughput, theirs: ProductFigures) -> list[Figure]:
    """A floor's workflow echo (p50, throughput from 8 clients) against Llama Deploy's, no target."""
    figs = [
        Figure(
            f"{key}.workflow.p50_ms",
            f"{name}: workflow echo p50",
            _p50(run),
            "ms",
            "anchor.ld.workflow.p50_ms",
            "LD 0.9.2",
            _p50(theirs.workflow),
        ),
    ]
    figs += [
        Figure(
            f"{key}.workflow.tps_{n}",
            f"{name}: workflow echo, {n} clients",
            rate,
            "/s",
            f"anchor.ld.workflow.rps_{n}",
            "LD 0.9.2",
            theirs.workflow.rates.get(n, math.nan),
        )
        for n, rate in run.rates.items()
        if n > 1
    ]
    return figs


def _versus(prefix: str, name: str, ours: ProductFigures, theirs: ProductFigures) -> list[Figure]:
    """llamactl's figures (keys under ``prefix``, labels led by ``name``) against Llama Deploy's."""
    figs: list[Figure] = []
    figs.append(
        _vs(
            f"{prefix}.workflow.p50_ms",
            f"{name}: workflow echo p50",
            _p50(ours.workflow),
            "ms",
            base=("anchor.ld.workflow.p50_ms", _p50(theirs.workflow)),
            check="<=",
            limit=1.0,
        )
    )
    for n, rate in ours.workflow.rates.items():
        if n > 1:
            figs.append(
                _vs(
                    f"{prefix}.workflow.tps_{n}",
                    f"{name}: workflow echo, {n} clients",
                    rate,
                    "/s",
                    base=(f"anchor.ld.workflow.rps_{n}", theirs.workflow.rates.get(n, math.nan)),
                    check=">=",
                    limit=1.5,
                )
            )
    figs += [
        _vs(
            f"{prefix}.cpu.tps",
            f"{name}: ~5 ms CPU step, {CPU_CLIENTS} clients (replicas: 2)",
            ours.cpu.rates.get(CPU_CLIENTS, math.nan),
            "/s",
            base=("anchor.ld.cpu.tps", theirs.cpu.rates.get(CPU_CLIENTS, math.nan)),
            check=">=",
            limit=1.8,
        ),
        _vs(
            f"{prefix}.io.tps",
            f"{name}: 50 ms awaited step, {IO_CLIENTS} clients",
            ours.io.rates.get(IO_CLIENTS, math.nan),
            "/s",
            base=("anchor.ld.io.tps", theirs.io.rates.get(IO_CLIENTS, math.nan)),
            check=">=",
            limit=1.0,
        ),
        _vs(
            f"{prefix}.io.p99_ms",
            f"{name}: 50 ms awaited step, {IO_CLIENTS} clients, p99",
            ours.io_p99,
            "ms",
            base=("anchor.ld.io.p99_ms", theirs.io_p99),
            check="<=",
            limit=1.2,
        ),
        _vs(
            f"{prefix}.memory_mb",
            f"{name}: peak RSS, server + its one worker (workflow echo only)",
            ours.memory_rss_bytes / _MB,
            "MB",
            base=("anchor.ld.memory_mb", theirs.memory_rss_bytes / _MB),
            check="<=",
            limit=1.0,
        ),
    ]
    top = max(ours.workflow.server_cpu_ms, default=0)
    figs.append(
        Figure(
            f"{prefix}.workflow.server_cpu_ms_{top}",
            f"{name}: workflow echo CPU per task, all processes, {top} clients",
            ours.workflow.server_cpu_ms.get(top, math.nan),
            "ms",
            f"anchor.ld.workflow.server_cpu_ms_{top}",
            "LD 0.9.2",
            theirs.workflow.server_cpu_ms.get(top, math.nan),
        )
    )
    return figs


def _versus_legacy(ours: ProductFigures, legacy: Throughput) -> list[Figure]:
    """llamactl against Llama Deploy 0.8.1, the seed's architecture (no targets)."""
    return [
        Figure(
            "anchor.workflow.p50_vs_ld081_ms",
            "llamactl: workflow echo p50",
            _p50(ours.workflow),
            "ms",
            "anchor.ld081.workflow.p50_ms",
            "LD 0.8.1",
            _p50(legacy),
        ),
        Figure(
            "anchor.workflow.tps_8_vs_ld081",
            "llamactl: workflow echo, 8 clients",
            ours.workflow.rates.get(8, math.nan),
            "/s",
            "anchor.ld081.workflow.rps_8",
            "LD 0.8.1",
            legacy.rates.get(8, math.nan),
        ),
    ]
