"""A soak: mixed plain and streaming tasks, cancels, random worker kills and a hot reload against a
real `llamactl serve --watch` for about a minute (LLAMACTL_SOAK_SECONDS for longer). At the end every
submitted task has exactly one final status, and the server's memory and files stopped growing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.procfs import descendants
from tests.llamactl.serving import Server
from tests.server.apiserver.conftest import SseReader

from .apps import App, write_fault_app

D = "/deployments/faults"
SECONDS = float(os.environ.get("LLAMACTL_SOAK_SECONDS", "60"))

# The suite's 120 s limit would end any soak longer than about a minute and a half.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 120)]


@dataclass
class Tally:
    submitted: list[str] = field(default_factory=list)
    finals: dict[str, str] = field(default_factory=dict)
    streamed: int = 0
    cancels: int = 0
    kills: int = 0
    feed_finals: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, int]] = field(default_factory=list)
    files: list[tuple[float, int]] = field(default_factory=list)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def state_bytes(app: App) -> int:
    return sum(p.stat().st_size for p in (app.folder / ".llamactl").glob("*") if p.is_file())


async def create(client: httpx.AsyncClient, service: str, payload: dict[str, object]) -> str:
    answer = await client.post(
        f"{D}/tasks/create", json={"service_id": service, "input": json.dumps(payload)}
    )
    answer.raise_for_status()
    task_id: str = answer.json()["task_id"]
    return task_id


async def final(client: httpx.AsyncClient, task_id: str, tally: Tally) -> None:
    answer = await client.get(f"{D}/tasks/{task_id}/results", params={"timeout": 120})
    answer.raise_for_status()
    tally.finals[task_id] = answer.json()["data"]["status"]


async def load(client: httpx.AsyncClient, tally: Tally, until: float, rng: random.Random) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        roll = rng.random()
        if roll < 0.7:
            task_id = await create(client, "work", {"key": f"w{id(rng)}-{n}", "seconds": 0})
            tally.submitted.append(task_id)
            await final(client, task_id, tally)
        elif roll < 0.9:
            task_id = await create(client, "ticks", {"key": f"t{id(rng)}-{n}", "n": 5, "every": 0.01})
            tally.submitted.append(task_id)
            seqs = []
            async with client.stream(
                "GET", f"{D}/tasks/{task_id}/events", headers={"accept": "text/event-stream"}
            ) as s:
                reader = SseReader(s)
                while (frame := await reader.next()) is not None and frame.event != "end":
                    seqs.append(frame.id)
            assert seqs == list(range(len(seqs))), seqs
            tally.streamed += 1
            await final(client, task_id, tally)
        else:
            task_id = await create(client, "work", {"key": f"c{id(rng)}-{n}", "seconds": 0.3})
            tally.submitted.append(task_id)
            answer = await client.post(f"{D}/tasks/{task_id}/cancel")
            assert answer.status_code in (200, 409), answer.text
            tally.cancels += 1
            await final(client, task_id, tally)


async def follow_changes(client: httpx.AsyncClient, tally: Tally) -> None:
    async with client.stream(
        "GET", f"{D}/changes", params={"from_seq": 0}, headers={"accept": "text/event-stream"}
    ) as s:
        reader = SseReader(s)
        while (frame := await reader.next()) is not None:
            change = json.loads(frame.data)
            if frame.event == "task.status" and change["data"]["status"] in (
                "completed",
                "failed",
                "cancelled",
            ):
                tally.feed_finals[change["data"]["task_id"]] += 1


async def chaos(server: Server, app: App, tally: Tally, until: float, rng: random.Random) -> None:
    start = time.monotonic()
    reloaded = False
    while time.monotonic() < until - 5:
        await asyncio.sleep(rng.uniform(4, 8))
        workers = descendants(server.process.pid)
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
            tally.kills += 1
        if not reloaded and time.monotonic() - start > (until - start) / 2:
            funcs = app.folder / "src" / "funcs.py"
            funcs.write_text(funcs.read_text() + "\n# reloaded\n")
            reloaded = True


async def sample(server: Server, app: App, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        now = time.monotonic()
        tally.rss.append((now, rss_kib(server.process.pid)))
        tally.files.append((now, state_bytes(app)))
        await asyncio.sleep(1)


def grew(samples: list[tuple[float, int]]) -> tuple[int, int]:
    """Peak of the third quarter and of the last quarter of the samples."""
    values = [v for _, v in samples]
    q = len(values) // 4
    return max(values[2 * q : 3 * q]), max(values[3 * q :])


async def test_soak(tmp_path: Path) -> None:
    app = write_fault_app(
        tmp_path / "app",
        {
            "work": {"path": "funcs:work", "replicas": 2, "max-concurrency": 8},
            "ticks": {"path": "funcs:ticks", "max-concurrency": 8},
        },
        control_plane={"max-finished-tasks": 500, "change-feed-retention": 3000, "prune-interval": 1},
        message_queue={"retention": 5},
    )
    server = Server(app.file, extra=["--watch"])
    tally = Tally()
    rng = random.Random(7)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
            follower = asyncio.create_task(follow_changes(client, tally))
            until = time.monotonic() + SECONDS
            await asyncio.gather(
                *(load(client, tally, until, random.Random(seed)) for seed in range(4)),
                chaos(server, app, tally, until, rng),
                sample(server, app, tally, until),
            )
            await asyncio.sleep(2)  # the follower reads the last finals
            follower.cancel()
    finally:
        code = server.stop()
    statuses = Counter(tally.finals.values())
    rss_q3, rss_q4 = grew(tally.rss)
    files_q3, files_q4 = grew(tally.files)
    twice = {t: n for t, n in tally.feed_finals.items() if n > 1}
    print(
        f"\ninjected over {SECONDS:.0f} s: {tally.kills} worker SIGKILLs, 1 hot reload, {tally.cancels} cancels; "
        f"counted: {len(tally.submitted)} submitted = {dict(statuses)}, {tally.streamed} streams read, "
        f"{len(twice)} tasks with more than one final status; server RSS {rss_q3 // 1024} -> "
        f"{rss_q4 // 1024} MiB, state files {files_q3 // 1024} -> {files_q4 // 1024} KiB (3rd -> 4th quarter)"
    )
    assert code == 0
    assert len(tally.finals) == len(tally.submitted)
    assert sum(statuses.values()) == len(tally.submitted)
    assert statuses["failed"] == 0, statuses
    assert not twice
    assert rss_q4 <= rss_q3 * 1.15 + 8 * 1024, (rss_q3, rss_q4)
    assert files_q4 <= files_q3 * 1.25 + 2 * 1024 * 1024, (files_q3, files_q4)
