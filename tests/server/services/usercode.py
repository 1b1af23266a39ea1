"""Source text of the user modules the tests write into a service source folder."""

from __future__ import annotations

FLOWS = """
import asyncio
import threading

from pydantic import BaseModel
from workflows import Context, Workflow, step
from workflows.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)


class Progress(Event):
    n: int


class Answer(BaseModel):
    text: str


class Counter(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = await ctx.store.get("n", default=0) + 1
        await ctx.store.set("n", n)
        for i in range(3):
            ctx.write_event_to_stream(Progress(n=i))
        return StopEvent(result={"count": n, "who": ev.get("who")})


class Asker(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        reply = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
        )
        return StopEvent(result=f"hello {reply.response}")


class Prepared(Event):
    what: str


class PrepareThenAsk(Workflow):
    # A step that counts its runs (prepared), then one that asks a question.

    prepared = 0

    @step
    async def prepare(self, ctx: Context, ev: StartEvent) -> Prepared:
        type(self).prepared += 1
        await ctx.store.set("what", str(ev.get("what", "it")))
        return Prepared(what=str(ev.get("what", "it")))

    @step
    async def ask(self, ctx: Context, ev: Prepared) -> StopEvent:
        reply = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix=f"{ev.what}?")
        )
        return StopEvent(result=f"{await ctx.store.get('what')}: {reply.response}")


class Sleeper(Workflow):
    @step
    async def sleep(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("slept", True)
        ctx.write_event_to_stream(Progress(n=0))
        await asyncio.sleep(3600)
        return StopEvent(result="woke")


def check(value):
    raise ValueError(f"bad input: {value}")


class Raiser(Workflow):
    @step
    async def fail(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("tried", True)
        check(7)
        return StopEvent(result="unreachable")


class Modelled(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=Answer(text="hi"))


class Opaque(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"obj": object(), "tuple": (1, 2)})


class Keeper(Workflow):
    # Counts in its Context; "lock" puts a value there that does not serialize.
    @step
    async def keep(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = await ctx.store.get("n", default=0) + 1
        await ctx.store.set("n", n)
        if ev.get("lock"):
            await ctx.store.set("lock", threading.Lock())
        if ev.get("fail"):
            raise ValueError("failed too")
        return StopEvent(result=n)


class RunIds(Workflow):
    # The run's id as the library knows it (None where it cannot say: workflows 1.x) and the
    # StartEvent's fields.
    @step
    async def report(self, ev: StartEvent) -> StopEvent:
        try:
            from workflows.plugins.basic import get_current_run_id
        except ImportError:
            run_id = None
        else:
            run_id = get_current_run_id()
        return StopEvent(result={"run_id": run_id, "fields": sorted(ev.keys())})


class NeedsArgs(Workflow):
    def __init__(self, llm):
        super().__init__()


counter = Counter(timeout=None)
asker = Asker(timeout=None)
prepare_then_ask = PrepareThenAsk(timeout=None)
sleeper = Sleeper(timeout=None)
raiser = Raiser(timeout=None)
modelled = Modelled(timeout=None)
opaque = Opaque(timeout=None)
keeper = Keeper(timeout=None)
run_ids = RunIds(timeout=None)
"""

FUNCS = """
import asyncio
import threading

release = threading.Event()


async def add(a: int, b: int = 1) -> int:
    return a + b


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def shout(text: str) -> dict:
    return {"text": text.upper(), "thread": threading.current_thread().name}


def blocked() -> str:
    release.wait(30)
    return "released"


async def forever() -> None:
    await asyncio.Event().wait()


async def agen(n: int):
    for i in range(n):
        yield {"i": i}
        await asyncio.sleep(0)
    yield "done"


def sgen(n: int):
    for i in range(n):
        yield f"step {i}"


def sgen_fails():
    yield "first"
    raise KeyError("second")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


async def unprintable() -> None:
    raise Unprintable()


async def verbose(size: int) -> None:
    raise ValueError("y" * size)


def returns_itself() -> dict:
    d = {}
    d["d"] = d
    return d


class Tool:
    async def __call__(self, x: int) -> int:
        return x * 2


tool = Tool()
NOT_CALLABLE = 42


class Plain:
    pass
"""
