"""Deployments for the fault tests: functions that count their runs, sleep, block their event loop,
spin, or kill their worker; and an audit that every accepted task ended exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamactl.server.control_plane import ControlPlane
from llamactl.server.types import TaskRecord
from tests.llamactl.serving import FLOWS
from tests.server.apiserver.conftest import SseReader

FUNCS = '''
import asyncio
import os
import sys
import time
from pathlib import Path

RUNS = Path(os.environ["FAULT_RUNS"])


def _ran(key: str) -> None:
    with open(RUNS / f"{key}.runs", "a") as f:
        f.write(f"{os.getpid()}\\n")


def _runs(key: str) -> int:
    path = RUNS / f"{key}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def work(key: str, seconds: float = 0.2, first: float | None = None, die: bool = False) -> str:
    """Sleeps ``first`` seconds on its first run (if given), ``seconds`` on any other; ``die``:
    kills its worker (a poison task), every time."""
    again = _runs(key) > 0
    _ran(key)
    if die:
        os._exit(17)
    await asyncio.sleep(float(seconds if again or first is None else first))
    return f"done {key}"


async def leave(key: str, how: str) -> str:
    """Tries to end its worker, every time: ``sys.exit`` in its run ("exit"), KeyboardInterrupt
    ("interrupt"), ``sys.exit`` in a loop callback, outside any task ("callback"), stops the
    event loop ("stop"), or cancels the worker's own tasks ("cancel")."""
    _ran(key)
    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "stop":
        asyncio.get_running_loop().stop()
    elif how == "cancel":
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
    else:
        asyncio.get_running_loop().call_soon(sys.exit, 3)
    await asyncio.sleep(30)
    return f"stayed {key}"


_HOARD: list[bytes] = []


async def hoard(key: str, mb: int) -> str:
    """Keeps ``mb`` MB more for as long as its worker lives (a cache without a bound)."""
    _ran(key)
    _HOARD.append(b"x" * (mb << 20))
    return f"hoarded {key}"


async def forks(key: str) -> str:
    """Squares two numbers in a fork pool, whose end sends SIGTERM to each of its processes."""
    import multiprocessing

    _ran(key)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        squares = pool.map(abs, [-1, -2])
    return f"forked {key} {squares}"


async def deafen(key: str) -> str:
    """Ignores SIGTERM and SIGINT from now on, as a library that installs its own handlers may."""
    import signal

    _ran(key)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return f"deaf {key}"


async def ticks(key: str, n: int = 10, every: float = 0.2):
    """Streams ``n`` events, one every ``every`` seconds; the last one is the result."""
    _ran(key)
    for i in range(int(n)):
        await asyncio.sleep(float(every))
        yield {"i": i}


async def gush(key: str, n: int, kill_at: int):
    """Streams ``n`` events as fast as it can (letting the loop run every 50); on its first
    run, SIGKILLs its own worker after ``kill_at`` of them (the last ones still on their way)."""
    first = _runs(key) == 0
    _ran(key)
    for i in range(int(n)):
        if first and i == int(kill_at):
            os.kill(os.getpid(), 9)
        if i % 50 == 0:
            await asyncio.sleep(0)
        yield {"i": i}


async def block(key: str, seconds: float) -> str:
    _ran(key)
    time.sleep(float(seconds))  # a blocking call in an async step: the fault
    return f"woke {key}"


async def spin(key: str, seconds: float) -> str:
    _ran(key)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:  # a busy loop in an async step: the fault
        pass
    return f"spun {key}"


async def freeze(key: str) -> str:
    """Holds the GIL for ever: a regular expression that backtracks without end (the fault)."""
    import re

    _ran(key)
    re.match(r"(a+)+$", "a" * 64 + "b")
    return f"matched {key}"


async def measure(key: str, text: str) -> str:
    """How long ``text`` is: a task whose input is as large as the test needs."""
    _ran(key)
    return f"{key}: {len(text)} characters"
'''


SYNCS = '''
import os
import time
from pathlib import Path

from workflows import Context, Workflow, step
from workflows.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent

RUNS = Path(os.environ["FAULT_RUNS"])


def _ran(key: str) -> None:
    with open(RUNS / f"{key}.runs", "a") as f:
        f.write(f"{os.getpid()}\\n")


class SyncStep(Workflow):
    """One sync step (run in a thread of the loop's default executor): sleeps ``seconds``."""

    @step
    def go(self, ev: StartEvent) -> StopEvent:
        _ran(ev.get("key"))
        time.sleep(float(ev.get("seconds", 0)))
        return StopEvent(result=f"done {ev.get('key')}")


sync_step = SyncStep(timeout=None)


class Prepared(Event):
    key: str


class PrepareThenAsk(Workflow):
    """A step that counts its runs, then one that asks for a person's answer."""

    @step
    async def prepare(self, ctx: Context, ev: StartEvent) -> Prepared:
        _ran(ev.get("key"))
        await ctx.store.set("key", ev.get("key"))
        return Prepared(key=ev.get("key"))

    @step
    async def ask(self, ctx: Context, ev: Prepared) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="What is the answer?")
        )
        return StopEvent(result=f"{await ctx.store.get('key')}: the human said {answer.response}")


prepare_then_ask = PrepareThenAsk(timeout=None)


class FirstAnswer(Event):
    response: str


class AskTwice(Workflow):
    """Asks two questions, one after the other (one step each): the result names both answers."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> FirstAnswer:
        answer = await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="First?"))
        return FirstAnswer(response=answer.response)

    @step
    async def second(self, ctx: Context, ev: FirstAnswer) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="Second?")
        )
        return StopEvent(result=f"{ev.response} then {answer.response}")


ask_twice = AskTwice(timeout=None)


def hang(key: str, seconds: float) -> str:
    """A sync function: sleeps ``seconds`` in its thread."""
    _ran(key)
    time.sleep(float(seconds))
    return f"done {key}"
'''


@dataclass
class App:
    folder: Path
    file: Path
    runs: Path

    def runs_of(self, key: str) -> int:
        """How many times the task body with this key started (in any worker process)."""
        path = self.runs / f"{key}.runs"
        return len(path.read_text().splitlines()) if path.exists() else 0


LINGERS = '''
import asyncio
import threading
import time


def _poll() -> None:
    while True:
        time.sleep(0.2)


# Not a daemon, as many libraries' background threads: Python waits for it before the process ends.
threading.Thread(target=_poll, name="poller").start()


async def lingering(key: str) -> str:
    return f"lingering {key}"


async def _swallow_cancel() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # as some retry loops do


async def stubborn(key: str) -> str:
    """Leaves a task behind that never takes its cancel."""
    asyncio.get_running_loop().create_task(_swallow_cancel())
    return f"stubborn {key}"
'''


def write_fault_app(
    folder: Path,
    services: dict[str, dict[str, object]],
    *,
    name: str = "faults",
    message_queue: dict[str, object] | None = None,
    control_plane: dict[str, object] | None = None,
) -> App:
    """A deployment of ``services`` (id -> settings, ``path`` among them) over FUNCS."""
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    (src / "funcs.py").write_text(FUNCS)
    (src / "flows.py").write_text(FLOWS)
    (src / "syncs.py").write_text(SYNCS)
    (src / "lingers.py").write_text(LINGERS)
    doc: dict[str, object] = {"name": name, "services": {}}
    for service_id, settings in services.items():
        doc["services"][service_id] = {  # type: ignore[index]
            "source": {"type": "local", "location": "src"},
            "env": {"FAULT_RUNS": str(runs)},
            **settings,
        }
    if message_queue:
        doc["message-queue"] = message_queue
    if control_plane:
        doc["control-plane"] = control_plane
    file = folder / "deployment.yml"
    file.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return App(folder, file, runs)


async def final_changes(cp: ControlPlane) -> Counter[str]:
    """How many final statuses the change feed recorded per task."""
    await cp.changes.flushed()
    finals: Counter[str] = Counter()
    seq = 0
    while batch := await cp.changes.read(seq, limit=5000):
        for change in batch:
            if change.kind == "task.status" and change.data["status"] in ("completed", "failed", "cancelled"):
                finals[change.data["task_id"]] += 1
        seq = batch[-1].seq + 1
    return finals


async def audit(cp: ControlPlane, task_ids: list[str]) -> list[TaskRecord]:
    """Every task is final, and its final status was recorded exactly once."""
    records = [await cp.get_task(t) for t in task_ids]
    unfinished = [r.task_id for r in records if not r.status.is_final]
    assert not unfinished, f"{len(unfinished)} task(s) never finished: {unfinished[:5]}"
    finals = await final_changes(cp)
    twice = {t: n for t in task_ids if (n := finals[t]) != 1}
    assert not twice, f"final status recorded other than once: {twice}"
    return records


async def final_statuses(
    client: httpx.AsyncClient, deployment: str = "faults", quiet: float = 2.0
) -> Counter[str]:
    """How many final statuses a server's change feed holds per task (read until it is quiet for
    ``quiet`` seconds)."""
    finals: Counter[str] = Counter()
    async with client.stream(
        "GET",
        f"/deployments/{deployment}/changes",
        params={"from_seq": 0},
        headers={"accept": "text/event-stream"},
    ) as stream:
        reader = SseReader(stream)
        while True:
            try:
                frame = await asyncio.wait_for(reader.next(), quiet)
            except TimeoutError:
                return finals
            if frame is None:
                return finals
            change = json.loads(frame.data)
            if frame.event == "task.status" and change["data"]["status"] in (
                "completed",
                "failed",
                "cancelled",
            ):
                finals[change["data"]["task_id"]] += 1
