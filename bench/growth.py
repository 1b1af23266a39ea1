"""Does a server that has run 100,000 tasks answer like one that has run 1,000?

``python -m bench.growth [--tasks 100000] [--connections 32]`` starts a real ``llamactl serve``,
pushes function-echo tasks through ``tasks/run`` and, at 1k, 10k and 100k tasks, reads the server's
memory (RSS), the size of its state files (and the largest of them, with the share of its pages
holding data rather than free for reuse), and the latency (median of 20 calls) of ``/metrics``, a
page of the task list (all, by status, by session) and the state snapshot. It runs twice: with the
default retention (at most 10,000 finished tasks kept) and keeping every task (the indexes alone
keep the calls flat). ``--tasks 300000`` adds checkpoints at 200k and 300k, to see the files stop
growing; ``--only default`` skips the second run. A benchmark, not a test: it prints figures and
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.deployment import DEPLOYMENT, write_deployment
from bench.http_client import HttpConnection, build_request
from bench.server_proc import ServerProcess

CHECKPOINTS = (1_000, 10_000, 100_000, 200_000, 300_000)
_D = f"/deployments/{DEPLOYMENT}"


@dataclass
class Checkpoint:
    tasks: int
    seconds: float
    rss_mib: float
    files_mib: float
    largest: str
    calls_ms: dict[str, float]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def state_files(folder: Path) -> list[Path]:
    return [p for p in (folder / ".llamactl").rglob("*") if p.is_file()]


def files_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in state_files(folder)) / 2**20


def largest_file(folder: Path) -> str:
    """The biggest state file, its size and, for a SQLite database, the share of pages in use."""
    path = max(state_files(folder), key=lambda p: p.stat().st_size)
    size = f"{path.name} {path.stat().st_size / 2**20:.1f} MiB"
    if path.suffix not in (".sqlite", ".db"):
        return size
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        db.close()
    return f"{size}, {100 * (pages - free) / max(pages, 1):.0f}% in use"


async def push(host: str, port: int, total: int, connections: int) -> None:
    """Run ``total`` echo tasks through tasks/run over ``connections`` keep-alive connections."""
    body = json.dumps({"input": json.dumps({"message": "hi"}), "service_id": "echo"})
    raw = build_request(
        "POST", host, port, f"{_D}/tasks/run", body, headers={"content-type": "application/json"}
    )
    left = [total]

    async def one() -> None:
        async with HttpConnection(host, port) as conn:
            while left[0] > 0:
                left[0] -= 1
                response = await conn.send(raw)
                if response.status != 200:
                    raise RuntimeError(f"tasks/run answered {response.status}: {response.body[:200]!r}")

    await asyncio.gather(*(one() for _ in range(connections)))


async def timed(conn: HttpConnection, path: str, runs: int = 20) -> float:
    """Median milliseconds of GET ``path``."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await conn.request("GET", path)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
    return statistics.median(samples)


async def calls(host: str, port: int) -> dict[str, float]:
    async with HttpConnection(host, port) as conn:
        newest = json.loads((await conn.request("GET", f"{_D}/tasks?limit=1&order=desc")).body)
        session = newest[0]["session_id"] if newest else "none"
        return {
            "/metrics": await timed(conn, "/metrics"),
            "tasks (page of 100)": await timed(conn, f"{_D}/tasks?limit=100&order=desc"),
            "tasks by status": await timed(conn, f"{_D}/tasks?limit=100&status=completed&order=desc"),
            "tasks by session": await timed(conn, f"{_D}/tasks?session_id={session}"),
            "state snapshot": await timed(conn, f"{_D}/state"),
        }


async def run(label: str, control_plane: str, total: int, connections: int) -> list[Checkpoint]:
    with tempfile.TemporaryDirectory(prefix="llamactl-growth-") as tmp:
        folder = Path(os.environ.get("GROWTH_DIR", tmp))
        file = write_deployment(folder, max_concurrency=64)
        file.write_text(file.read_text() + control_plane)
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
        results: list[Checkpoint] = []
        async with ServerProcess(argv, cwd=folder) as server:
            done, started = 0, time.perf_counter()
            for checkpoint in (c for c in CHECKPOINTS if c <= total):
                await push(server.host, server.port, checkpoint - done, connections)
                done = checkpoint
                results.append(
                    Checkpoint(
                        checkpoint,
                        time.perf_counter() - started,
                        rss_mib(server.pid),
                        files_mib(folder),
                        largest_file(folder),
                        await calls(server.host, server.port),
                    )
                )
                print(f"  {label}: {checkpoint:>7,} tasks after {results[-1].seconds:.0f} s", file=sys.stderr)
        return results


def table(label: str, rows: list[Checkpoint]) -> str:
    names = list(rows[0].calls_ms)
    head = "| tasks run | server RSS | state files | largest | "
    head += " | ".join(f"{n} p50" for n in names) + " |"
    lines = [f"**{label}**", "", head, "|" + "---|" * (4 + len(names))]
    for r in rows:
        cells = [f"{r.tasks:,}", f"{r.rss_mib:.0f} MiB", f"{r.files_mib:.1f} MiB", r.largest]
        cells += [f"{r.calls_ms[n]:.1f} ms" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(total: int, connections: int, only: str | None) -> None:
    configs = {
        "default": ("default retention (10,000 finished tasks kept)", ""),
        "all": (
            "every task kept (max-finished-tasks 1,000,000)",
            "control-plane:\n  max-finished-tasks: 1000000\n",
        ),
    }
    for key, (label, extra) in configs.items():
        if only is not None and key != only:
            continue
        rows = await run(label, extra, total, connections)
        print(table(label, rows), end="\n\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--only", choices=("default", "all"), help="run one of the two configurations")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.connections, args.only))
