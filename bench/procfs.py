"""Peak memory and CPU time of a process and its descendants (also split by thread and child),
and the machine's CPU and wake-ups, read from /proc (Linux, no psutil)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuSplit",
    "MachineCpu",
    "TreeUsage",
    "Wakeups",
    "cpu_seconds",
    "cpu_split",
    "descendants",
    "machine_cpu",
    "tree_usage",
    "wakeups",
]

_PROC = Path("/proc")
_TICK = float(os.sysconf("SC_CLK_TCK"))


def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """Fields of /proc/<pid>/stat (of its thread ``tid``: /proc/<pid>/task/<tid>/stat) after the
    command name (field 3 onwards), or None if gone."""
    path = _PROC / str(pid) / ("stat" if tid is None else f"task/{tid}/stat")
    try:
        text = path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...), by walking /proc."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _hwm_kib(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` in KiB; 0 if it is gone."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of ``pid`` (of its thread ``tid`` alone) in seconds; 0 if it is gone."""
    fields = _stat_fields(pid, tid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of stat; fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True, slots=True)
class CpuSplit:
    """CPU seconds of a server, split: its main thread (the event loop), each of its other threads
    and each of its descendants (its workers), by id. Counted in clock ticks (10 ms here): over a
    second of a few hundred tasks, a few microseconds per task."""

    process: float
    """The whole server process: every thread, those that ended too."""
    loop: float
    thread_cpu: dict[int, float]
    child_cpu: dict[int, float]

    @property
    def threads(self) -> float:
        """The other threads together."""
        return sum(self.thread_cpu.values())

    @property
    def workers(self) -> float:
        """All descendants together."""
        return sum(self.child_cpu.values())

    def __sub__(self, earlier: CpuSplit) -> CpuSplit:
        """What was spent since ``earlier``: each thread and child against its own earlier reading
        (one that started since counts from zero; one that ended since is left out), so that no
        part goes below zero however the readings fall between clock ticks."""
        return CpuSplit(
            self.process - earlier.process,
            self.loop - earlier.loop,
            {tid: cpu - earlier.thread_cpu.get(tid, 0.0) for tid, cpu in self.thread_cpu.items()},
            {pid: cpu - earlier.child_cpu.get(pid, 0.0) for pid, cpu in self.child_cpu.items()},
        )


def _thread_ids(pid: int) -> list[int]:
    try:
        return [int(entry.name) for entry in (_PROC / str(pid) / "task").iterdir()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def cpu_split(pid: int) -> CpuSplit:
    """``pid``'s CPU seconds split into its main thread, its other threads and its descendants."""
    loop = cpu_seconds(pid, pid)
    threads = {tid: cpu_seconds(pid, tid) for tid in _thread_ids(pid) if tid != pid}
    process = cpu_seconds(pid)  # read after its threads: never less than their sum
    return CpuSplit(process, loop, threads, {c: cpu_seconds(c) for c in descendants(pid)})


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """Summed over a process and its live descendants."""

    processes: int
    peak_rss_bytes: int
    """Sum of each process's VmHWM (their peaks need not coincide: an upper bound)."""
    cpu_seconds: float


def tree_usage(pid: int) -> TreeUsage:
    """Peak RSS and CPU seconds of ``pid`` and its live descendants."""
    pids = [pid, *descendants(pid)]
    return TreeUsage(
        processes=len(pids),
        peak_rss_bytes=sum(_hwm_kib(p) for p in pids) * 1024,
        cpu_seconds=sum(cpu_seconds(p) for p in pids),
    )


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Cumulative CPU seconds of the whole machine, from the first line of /proc/stat."""

    busy: float
    """user + nice + system + irq + softirq, over all cores."""
    steal: float
    """Time the hypervisor gave our virtual cores to someone else."""


def machine_cpu() -> MachineCpu:
    """The machine's cumulative busy and steal CPU seconds."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return MachineCpu((user + nice + system + irq + softirq) / _TICK, steal / _TICK)


@dataclass(frozen=True, slots=True)
class Wakeups:
    """Cumulative counts of the whole machine: how often a core switched threads, and how often
    one core interrupted another to make it run a thread (rescheduling and function-call IPIs,
    each a VM exit on a virtual machine)."""

    switches: int
    ipis: int


def wakeups() -> Wakeups:
    """The machine's cumulative context switches (/proc/stat) and IPIs (/proc/interrupts)."""
    with open("/proc/stat") as f:
        switches = next((int(line.split()[1]) for line in f if line.startswith("ctxt ")), 0)
    ipis = 0
    with open("/proc/interrupts") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in ("RES:", "CAL:"):
                ipis += sum(int(v) for v in fields[1:] if v.isdigit())
    return Wakeups(switches, ipis)
