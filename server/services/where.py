"""Where a task's code is: the frames it waits in, for a timeout's error, ``tasks where`` and SIGUSR2.

"timed out after 60 s" left the developer to guess which call never came back. While the run
is there to look at: an async function's chain of awaits (each coroutine's frame stops at the
line it awaits on), a sync function's thread (``sys._current_frames``), a workflow's steps
still in progress (their tasks and threads, found by the step's code). The place named is the
innermost line of the service's own code; the stacks go with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import queue
import sys
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

__all__ = [
    "Where",
    "awaiting_frames",
    "describe",
    "frames_running",
    "steps_pending",
    "thread_frames",
    "workflow_steps_where",
]

_SERVER = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_LIBRARIES = tuple(
    os.path.join(os.path.realpath(path), "")
    for path in {
        *(sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")),
        _SERVER,
    }
)
"""Folders of code that is not the service's own: the standard library, installed packages, and
llamactl's server (what a user's frame is found under when llamactl is installed editable)."""

_WAITING = tuple(
    os.path.realpath(path)
    for path in (
        os.path.join(os.path.dirname(asyncio.__file__), ""),
        os.path.join(os.path.dirname(concurrent.futures.__file__), ""),
        threading.__file__,
        queue.__file__,
    )
)
"""The standard library's ways of waiting (asyncio, futures, locks, events, queues): frames in
them at the bottom of a stack only say that the line above them waits, which it shows itself."""

_CHAIN_LIMIT = 200
"""Awaits followed at most (a chain that loops back on itself ends here)."""


class Where:
    """The stack of one place a run is at (outermost first), and, for a workflow, its step."""

    def __init__(self, frames: list[FrameType], step: str | None = None) -> None:
        self.step = step
        while len(frames) > 1 and os.path.realpath(frames[-1].f_code.co_filename).startswith(_WAITING):
            frames = frames[:-1]  # `return await future` below `await asyncio.sleep(...)`: no news
        self.stack = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)

    def own(self) -> traceback.FrameSummary | None:
        """The innermost frame of the service's own code (else the innermost one)."""
        for frame in reversed(self.stack):
            if not os.path.realpath(frame.filename).startswith(_LIBRARIES):
                return frame
        return self.stack[-1] if self.stack else None


def awaiting_frames(awaitable: object) -> list[FrameType]:
    """The frames of a suspended coroutine (or a task's, or an async generator's) and of what it
    awaits, down to the innermost one, outermost first."""
    frames: list[FrameType] = []
    current: Any = awaitable
    for _ in range(_CHAIN_LIMIT):
        if isinstance(current, asyncio.Task):
            current = current.get_coro()
            continue
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
        frame = frame or getattr(current, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        following = getattr(current, "cr_await", None)
        for name in ("gi_yieldfrom", "ag_await"):
            following = following if following is not None else getattr(current, name, None)
        if following is None:
            break
        current = following
    return frames


def thread_frames(ident: int, after: CodeType | None = None) -> list[FrameType]:
    """The frames of thread ``ident``, outermost first; with ``after``, only those below the frame
    running that code (the call the thread was given, without the pool's frames around it)."""
    return _stack_from(sys._current_frames().get(ident), after)


def _stack_from(frame: FrameType | None, after: CodeType | None = None) -> list[FrameType]:
    """``frame`` and its callers, outermost first, up to (not including) one running ``after``."""
    frames: list[FrameType] = []
    while frame is not None:
        if after is not None and frame.f_code is after:
            break
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


def frames_running(code: CodeType) -> list[list[FrameType]]:
    """The stacks, outermost first, of each asyncio task of this loop and each thread that runs
    ``code`` now, each from the frame running it down."""
    stacks = [awaiting_frames(task) for task in asyncio.all_tasks()]
    stacks += [_stack_from(frame) for frame in sys._current_frames().values()]  # one snapshot
    found: list[list[FrameType]] = []
    for frames in stacks:
        found += [frames[i:] for i, f in enumerate(frames) if f.f_code is code][:1]
    return found


def code_of(fn: Callable[..., Any]) -> CodeType | None:
    """The code object of a function behind its decorators (None for a builtin, say)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return code if isinstance(code, CodeType) else None


def workflow_steps_where(workflow: object, context: dict[str, Any]) -> list[Where]:
    """Each step of a workflow run still in progress (``context``: the run's serialized
    Context), with where its code is when one task or thread alone runs it: several runs of
    the workflow at the same step cannot be told apart."""
    steps: dict[str, Any] = getattr(workflow, "_get_steps", dict)()
    places = []
    for name in _steps_in_progress(context):
        code = code_of(steps[name]) if name in steps else None
        running = frames_running(code) if code is not None else []
        places.append(Where(running[0] if len(running) == 1 else [], step=name))
    return places


def _steps_in_progress(context: dict[str, Any]) -> list[str]:
    """The steps a serialized Context has in progress, by name: ``workers.<step>.in_progress``
    (workflows 2.x) or ``in_progress.<step>`` (1.x, which keeps only async steps there)."""
    workers = context.get("workers")
    if isinstance(workers, dict):
        return sorted(
            name for name, state in workers.items() if isinstance(state, dict) and state.get("in_progress")
        )
    in_progress = context.get("in_progress")
    return (
        sorted(name for name, events in in_progress.items() if events)
        if isinstance(in_progress, dict)
        else []
    )


def steps_pending(context: dict[str, Any]) -> list[str]:
    """The steps a serialized Context has work for, by name: in progress, waiting for an event
    (workflows 2.x: ``workers.<step>.collected_waiters``), or with events queued."""
    workers = context.get("workers")
    if isinstance(workers, dict):
        keys = ("in_progress", "collected_waiters", "queue")
        return sorted(
            name
            for name, state in workers.items()
            if isinstance(state, dict) and any(state.get(key) for key in keys)
        )
    pending = set(_steps_in_progress(context))
    queues = context.get("queues")
    if isinstance(queues, dict):  # 1.x: each step's queue, serialized ("[]" when empty)
        pending |= {
            name for name, queued in queues.items() if not name.startswith("_") and queued not in ("[]", [])
        }
        pending -= {name for name in pending if name.startswith("waiter_")}
    return sorted(pending)


def describe(places: Iterable[Where], header: str) -> tuple[str, str | None]:
    """``, in f (app.py line 12)`` for a line about the run (empty when nothing is known), and
    each place's stack under ``header`` (None then)."""
    places = list(places)
    parts: list[str] = []
    for place in places:
        frame = place.own()
        at = f"{_shown_path(frame.filename)} line {frame.lineno}" if frame is not None else ""
        if place.step is not None:
            parts.append(f"step {place.step}" + (f" ({at})" if at else ""))
        elif frame is not None:
            parts.append(f"{frame.name} ({at})")
    stacks = [
        (f"Step {place.step}: {header[0].lower()}{header[1:]}" if place.step else header)
        + " (most recent call last):\n"
        + "".join(place.stack.format())
        for place in places
        if place.stack
    ]
    return (", in " + ", ".join(parts) if parts else ""), ("\n".join(stacks) or None)


def _shown_path(filename: str) -> str:
    """``filename`` relative to the worker's folder (the service's source) when it is inside it."""
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative
