"""``python -m bench.stages``: where a sequential task's time goes, stage by stage.

One client sends the round trip's requests to one service, back to back, for ``--seconds``; the
server runs under :mod:`bench.stage_probe`, which stamps each stage of a task's path. Printed:
the median (and quartiles) of each stage over the tasks whose path had the usual shape, the
server's part of the round trip against the client's p50, and the commit made while the worker
runs (a task handed out before it is stored: off the round trip's path when the worker takes
longer). Timings are this run's on this machine: compare two commits with ``bench.ab``, and use
this to see which stage a change moved.

    python -m bench.stages --service wf
    python -m bench.stages --service wf --python ~/.cache/llamactl-bench/llamactl-workflows-1.3.0/bin/python
    python -m bench.stages --split    # also cut "request read -> sent" and "result back -> commit" finer
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.ab import AB_SERVICES, Burst, burst, serve
from bench.cached_env import REPO_ROOT, byte_compile

__all__ = [
    "REQUEST_STEPS",
    "SPLIT_STEPS",
    "STEPS",
    "WORKER_STEPS",
    "Cycle",
    "Stages",
    "Steps",
    "cycles",
    "main",
    "measure",
    "stages",
]

Event = tuple[str, int]
"""A stage and when it was reached (``time.perf_counter_ns()``)."""

Steps = tuple[tuple[str, str, str], ...]
"""Steps, each ``(from stamp, to stamp, label)``."""

STEPS: Steps = (
    ("read", "sent", "request read -> sent to its worker"),
    ("sent", "result", "sent -> result back (the worker, two hops)"),
    ("result", "commit", "result back -> its commit begins"),
    ("commit", "committed", "the commit"),
    ("committed", "answer", "commit ended -> answer written"),
    ("read", "answer", "request read -> answer written (all but the client)"),
)

WORKER_STEPS: Steps = (
    ("sent", "w_in", "-> the worker has it (a hop)"),
    ("w_in", "w_handle", "-> its handler begins"),
    ("w_handle", "w_run", "-> the run begins"),
    ("w_run", "w_ran", "-> the run ends (its set-up and the code)"),
    ("w_ran", "w_out", "-> the result is written"),
    ("w_out", "result", "-> the server has it (a hop)"),
)
""""sent -> result back" cut at the worker's stamps (``bench/stage_probe_worker.py``), the first of
each after the one before."""

REQUEST_STEPS: Steps = (
    ("read", "parsed", "-> uvicorn has parsed it"),
    ("parsed", "guard", "-> the ASGI middlewares before the guard"),
    ("guard", "route", "-> the guard, the routing"),
    ("route", "body", "-> the route reads its parameters"),
    ("body", "handler", "-> its body read and validated, the task defined"),
    ("handler", "create", "-> the task's checks and record"),
    ("create", "publish", "-> its start message goes to the queue"),
    ("publish", "link", "-> the broker has it (a loop turn)"),
    ("link", "deliver", "-> the broker delivers it"),
    ("deliver", "sent", "-> written to its worker's socket"),
)
"""``--split``: "request read -> sent to its worker" cut at the stamps of ``bench/stage_probe.py``'s
``REQUEST_SPLIT``, the first of each after the one before."""

SPLIT_STEPS: Steps = (
    ("result", "frames", "-> the broker has its frames"),
    ("frames", "offer", "-> offered to the control plane's consumer"),
    ("offer", "apply", "-> its report's application begins"),
    ("apply", "final", "-> the final report's handler begins"),
    ("final", "transition", "-> the task record's change begins"),
    ("transition", "submit", "-> the commit's writes go to the writer"),
    ("submit", "commit", "-> the commit begins"),
)
"""``--split``: "result back -> its commit begins" cut at the stamps of ``bench/stage_probe.py``'s
``SPLIT``, the first of each after the one before."""


@dataclass(slots=True)
class Cycle:
    """One request's stamps, from its first read to the next request's."""

    events: list[Event] = field(default_factory=list)

    def at(self) -> dict[str, int] | None:
        """When each stage of the usual path was reached (None when this request's path had
        another shape): the first send after the read, the first result after it, the last
        commit that began after the result (the one that stores it: a commit of the task made
        while its worker runs it may end after a quick worker's result) and its end, and the
        last write of the answer (its head may go in a write of its own)."""
        first: dict[str, int] = {}
        begun: int | None = None
        for stage, t in self.events:
            if stage == "read" and "read" not in first:
                first["read"] = t
            elif stage == "sent" and "read" in first and "sent" not in first:
                first["sent"] = t
            elif stage == "result" and "sent" in first and "result" not in first:
                first["result"] = t
            elif stage == "commit" and "result" in first:
                begun = t
            elif stage == "committed" and begun is not None and begun > first["result"]:
                first["commit"], first["committed"] = begun, t
                begun = None
            elif stage == "answer" and "committed" in first:
                first["answer"] = t
        return first if len(first) == 6 else None

    def cut(self, at: dict[str, int], steps: Steps) -> dict[str, int] | None:
        """When each stamp of ``steps`` (a cut of one step of the usual path, whose ``at`` is
        given) was reached: the first of each after the one before, between the step's two
        stamps; None when one is missing (a probe without them, or a task that took another way)."""
        first, last = steps[0][0], steps[-1][1]
        names = [end for _, end, _ in steps[:-1]]
        found = {first: at[first]}
        for name, t in self.events:
            if len(found) > len(names) or t >= at[last]:
                break
            if t > at[first] and name == names[len(found) - 1]:
                found[name] = t
        if len(found) <= len(names):
            return None
        found[last] = at[last]
        return found

    def early_commits(self) -> list[int]:
        """Durations (ns) of the commits that ran between the send and the result: the task
        stored while its worker runs it."""
        sent = next((t for s, t in self.events if s == "sent"), None)
        result = next((t for s, t in self.events if s == "result" and sent is not None and t > sent), None)
        if sent is None or result is None:
            return []
        spans, begun = [], None
        for stage, t in self.events:
            if stage == "commit" and sent < t < result:
                begun = t
            elif stage == "committed" and begun is not None:
                spans.append(t - begun)
                begun = None
        return spans


def cycles(events: Sequence[Event]) -> list[Cycle]:
    """The events cut into one cycle per request: a read after an answer starts the next one."""
    out: list[Cycle] = []
    answered = True
    for stage, t in events:
        if stage == "read" and answered:
            out.append(Cycle())
            answered = False
        if out:
            out[-1].events.append((stage, t))
            answered = answered or stage == "answer"
    return out


@dataclass(frozen=True, slots=True)
class Stages:
    """What :func:`stages` found: microseconds per step (each a list over the usual cycles)."""

    steps: dict[str, list[float]]
    early: list[float]
    """Durations (us) of the commits made while a worker ran the task."""
    usual: int
    total: int
    split: dict[str, list[float]] = field(default_factory=dict)
    """``--split``: microseconds per finer step of "result back -> its commit begins" (each a list
    over the usual cycles that had every stamp)."""
    request: dict[str, list[float]] = field(default_factory=dict)
    """``--split``: microseconds per finer step of "request read -> sent to its worker" (each a
    list over the usual cycles that had every stamp)."""
    worker: dict[str, list[float]] = field(default_factory=dict)
    """Microseconds per step of "sent -> result back" in the worker (each a list over the usual
    cycles that had every stamp); empty for a checkout whose probe does not stamp its workers."""

    def report(self, p50_ms: float | None = None) -> list[str]:
        lines = [f"{self.usual} of {self.total} tasks took the usual path; microseconds, median [p25-p75]:"]
        for label, values in self.steps.items():
            lines.append(f"  {label:52s} {_quartiles(values)}")
        if self.early:
            share = f"{len(self.early)} commits in {self.usual} tasks"
            lines.append(
                f"  {'a commit while the worker runs (off the path)':52s} {_quartiles(self.early)} ({share})"
            )
        for title, cut in (
            ("request read -> sent to its worker, cut finer", self.request),
            ("sent -> result back, in the worker", self.worker),
            ("result back -> its commit begins, cut finer", self.split),
        ):
            if cut:
                n = len(next(iter(cut.values())))
                lines.append(f"  {title} ({n} of {self.usual} tasks):")
                lines += [f"    {label:50s} {_quartiles(values)}" for label, values in cut.items()]
        if p50_ms is not None and self.steps:
            server = statistics.median(self.steps[STEPS[-1][2]])
            outside = p50_ms * 1000 - server
            lines.append(
                f"  client p50 {p50_ms * 1000:.0f} us: the rest ({outside:.0f}) is the client and its hops"
            )
        return lines


def _quartiles(values: list[float]) -> str:
    ordered = sorted(values)
    n = len(ordered)
    return f"{statistics.median(ordered):8.1f} [{ordered[n // 4]:.1f}-{ordered[3 * n // 4]:.1f}]"


def stages(events: Sequence[Event]) -> Stages:
    """The steps of the cycles with the usual path, in microseconds."""
    found = cycles(events)
    steps: dict[str, list[float]] = {label: [] for _, _, label in STEPS}
    cuts: dict[Steps, dict[str, list[float]]] = {
        cut: {label: [] for _, _, label in cut} for cut in (REQUEST_STEPS, WORKER_STEPS, SPLIT_STEPS)
    }
    early: list[float] = []
    usual = 0
    for cycle in found:
        at = cycle.at()
        if at is None:
            continue
        usual += 1
        _add(steps, STEPS, at)
        early.extend(ns / 1000 for ns in cycle.early_commits())
        for cut, values in cuts.items():
            stamps = cycle.cut(at, cut)
            if stamps is not None:
                _add(values, cut, stamps)

    def found_in(cut: Steps) -> dict[str, list[float]]:
        values = cuts[cut]
        return values if any(values.values()) else {}

    return Stages(
        steps if usual else {},
        early,
        usual,
        len(found),
        split=found_in(SPLIT_STEPS),
        request=found_in(REQUEST_STEPS),
        worker=found_in(WORKER_STEPS),
    )


def _add(values: dict[str, list[float]], steps: Steps, at: dict[str, int]) -> None:
    for start, end, label in steps:
        values[label].append((at[end] - at[start]) / 1000)


async def measure(
    checkout: Path, python: Path, service: str, seconds: float, *, split: bool = False
) -> tuple[Burst, list[Event]]:
    """One client's burst of ``seconds`` against a probed server (``split``: with the finer
    stamps too), and the stamps inside it: the server's, and those of the worker that ran the
    burst's tasks (stamps of the others, heartbeats say, would cut into its own)."""
    with tempfile.TemporaryDirectory(prefix="llamactl-stages-") as tmp:
        out = Path(tmp) / "stamps.txt"
        async with contextlib.AsyncExitStack() as stack:
            launcher = ("-m", "bench.stage_probe", *(("--split",) if split else ()), str(out))
            target = await serve(stack, checkout, service, python=python, launcher=launcher)
            await burst(target, 1, min(1.0, seconds))  # warm up
            start = time.perf_counter_ns()
            result = await burst(target, 1, seconds)
            end = time.perf_counter_ns()
        if not out.exists():
            raise RuntimeError("the probed server wrote no stamps: it did not exit cleanly")
        stamps = _read(out, start, end)
        for worker in sorted(out.parent.glob(f"{out.name}.worker-*")):
            theirs = _read(worker, start, end)
            if any(stage == "w_handle" for stage, _ in theirs):
                stamps += theirs
    return result, sorted(stamps, key=lambda stamp: stamp[1])


def _read(file: Path, start: int, end: int) -> list[Event]:
    """The stamps of ``file`` between ``start`` and ``end``."""
    stamps = ((stage, int(t)) for t, stage in (line.split() for line in file.read_text().splitlines()))
    return [(stage, t) for stage, t in stamps if start <= t <= end]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", default="echo", choices=sorted(AB_SERVICES), help="default echo")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the measured burst (default 3)")
    parser.add_argument(
        "--checkout", type=Path, default=REPO_ROOT, help="llamactl's sources (default: this one)"
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="the interpreter that runs the server (default: this one), e.g. the anchor's "
        "environment with Llama Deploy's workflows library",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help='also cut "request read -> sent to its worker" at each layer the request passes '
        '(HTTP, ASGI, routing, validation, control plane, queue, broker) and "result back -> its '
        'commit begins" at each layer the result passes (broker, consumer, report, handler, '
        "record, writer)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be above 0")
    probe = args.checkout / "bench" / "stage_probe.py"
    if not probe.is_file():
        parser.error(f"--checkout {args.checkout}: no bench/stage_probe.py there")
    if args.split and "--split" not in probe.read_text():
        parser.error(f"--checkout {args.checkout}: its bench/stage_probe.py is older than --split")
    byte_compile(args.checkout)
    result, events = asyncio.run(
        measure(args.checkout, args.python, args.service, args.seconds, split=args.split)
    )
    found = stages(events)
    rate, p50 = f"{result.rate:.0f} tasks/s", f"p50 {result.p50_ms:.3f} ms"
    print(f"service {args.service}, one client for {args.seconds:g} s: {rate}, {p50}")
    if not found.usual:
        print("no task took the usual path (read, send, result, commit, answer): nothing to report")
        return 1
    print("\n".join(found.report(result.p50_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
