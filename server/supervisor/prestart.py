"""Processes started before their spec is known, and handed it once it is.

A worker spends most of its start importing our own runtime (Python, pydantic, ZeroMQ, the
worker's modules), none of which depends on which service it will run. ``llamactl serve``
starts that many interpreters at its first instant, so that they import while the server does,
instead of after it; each deployment's supervisor then takes one for a replica whose command
and start-up environment match, and hands it the rest (its whole environment and its folder)
through its stdin.

With ``--watch`` it then keeps spares (:func:`keep`): a hot reload's new workers take them, so a
reload waits only for the service's own code to load.

Both sides live here. The parent: :func:`prestart`, then :func:`take` (which the supervisor
tries before it spawns), then :func:`release` for the ones nobody took, or :func:`keep`. The
child: a program started with :data:`PRESTARTED_ENV` set calls :func:`await_start` before it
reads its environment; one started the usual way goes on at once.

What a process reads only while Python starts (``PYTHON*`` variables, the dynamic linker's
``LD_*``, the allocator's) cannot be handed over later: a replica whose values of those differ
from the prestarted process's is spawned afresh, as is one that runs another interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from ._os import Child, child_environment, spawn
from .models import ProcessSpec

__all__ = [
    "PRESTARTED_ENV",
    "await_start",
    "keep",
    "prestart",
    "prestarted",
    "release",
    "take",
]

log = logging.getLogger(__name__)

PRESTARTED_ENV = "LLAMACTL_PRESTARTED"
"""Set in a prestarted process's environment: it waits for its start (:func:`await_start`)."""

_READ_AT_START = ("PYTHON", "LD_", "MALLOC_", "GLIBC_")
"""Prefixes of the variables an interpreter reads as it starts, not after."""

_RELEASE_WAIT = 5.0
"""Seconds :func:`release` waits for the processes it killed to be reaped."""

Output = Callable[[str, str], None] | None


class _Pool:
    def __init__(self) -> None:
        self.template: ProcessSpec | None = None
        """What the waiting processes run, with :data:`PRESTARTED_ENV` set; None: nothing to take."""
        self.output: Output = None
        self.start_env: dict[str, str] = {}
        self.waiting: list[Child] = []
        self.spares = 0
        self.filling: asyncio.Task[None] | None = None


_pool = _Pool()


async def prestart(template: ProcessSpec, count: int, *, output: Output) -> None:
    """Start ``count`` processes of ``template`` that wait for their start on stdin.

    ``output`` is what a later :func:`take` must ask for too (captured or not); until one is
    taken, what a process prints goes to ``output`` under the template's name. A spawn that
    fails is logged and leaves fewer waiting: the replicas are spawned the usual way then.
    """
    await release()
    marked = replace(template, env={**template.env, PRESTARTED_ENV: "1"})
    _pool.template = marked
    _pool.output = output
    _pool.start_env = _read_at_start(child_environment(marked))
    await _fill(count)


async def keep(spares: int) -> None:
    """From now on keep ``spares`` processes waiting (end the others; 0: :func:`release`), and
    start a successor for each one taken: what a hot reload's new workers take."""
    if spares <= 0 or _pool.template is None:
        await release()
        return
    _pool.spares = spares
    extra, _pool.waiting = _pool.waiting[spares:], _pool.waiting[:spares]
    await _end(extra)
    _refill()


def take(spec: ProcessSpec, output: Output) -> Child | None:
    """A prestarted process that runs ``spec`` from now on, or None when none can.

    One can when its command is ``spec``'s, its output is captured alike, ``spec`` hides no
    variable it was started with, and what an interpreter reads as it starts is the same.
    """
    template = _pool.template
    if (
        template is None
        or list(spec.argv) != list(template.argv)
        or (output is not None) != (_pool.output is not None)
        or not spec.hidden_env <= template.hidden_env
        or (spec.cwd is not None and not spec.cwd.is_dir())  # spawn says what is missing
    ):
        return None
    env = child_environment(spec)
    if _read_at_start(env) != _pool.start_env:
        return None
    taken = None
    while _pool.waiting and taken is None:
        child = _pool.waiting.pop(0)
        if child.hand_over(spec.name, output, _start_message(env, spec)):
            taken = child
        else:
            child.kill()  # it died waiting: its output said why
    _refill()  # at once: a reload's other workers, and the next reload, find one ready
    return taken


def prestarted() -> list[int]:
    """The pids of the processes still waiting to be taken."""
    return [child.pid for child in _pool.waiting]


async def release() -> None:
    """Kill the processes nobody took (they hold nothing yet: they wait on their stdin, or still
    import) and wait for them to be gone; :func:`take` finds none from now on."""
    _pool.template = None
    _pool.spares = 0
    if _pool.filling is not None:
        await _pool.filling  # it ends what it starts once the template is gone
        _pool.filling = None
    waiting, _pool.waiting = _pool.waiting, []
    await _end(waiting)


async def _end(children: list[Child]) -> None:
    for child in children:
        child.kill()
    if children:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_RELEASE_WAIT):
                await asyncio.gather(*(child.wait() for child in children))


async def _fill(count: int) -> None:
    while _pool.template is not None and len(_pool.waiting) < count:
        try:
            child = await spawn(_pool.template, output=_pool.output, stdin_pipe=True)
        except OSError as exc:
            log.info("could not start a worker ahead of its replica (%s): it starts the usual way", exc)
            return
        if _pool.template is None:  # released while it started
            await _end([child])
            return
        _pool.waiting.append(child)


def _refill() -> None:
    if len(_pool.waiting) < _pool.spares and (_pool.filling is None or _pool.filling.done()):
        _pool.filling = asyncio.get_running_loop().create_task(_fill(_pool.spares), name="prestart refill")


def _start_message(env: Mapping[str, str], spec: ProcessSpec) -> bytes:
    message = {"env": dict(env), "cwd": None if spec.cwd is None else str(spec.cwd)}
    return json.dumps(message).encode() + b"\n"


def _read_at_start(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_READ_AT_START)}


# --- the child's side ----------------------------------------------------------------------------


def await_start() -> bool:
    """In a process started by :func:`prestart`: wait for its start, then take its environment
    and folder and put ``/dev/null`` on stdin (as a process spawned the usual way has it).

    Returns True at once in a process started the usual way, and False when the parent ended
    the wait without a start (the process should leave quietly).
    """
    if os.environ.get(PRESTARTED_ENV) is None:
        return True
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return False
        data += chunk
    start = json.loads(data)
    env: dict[str, str] = start["env"]
    os.environ.clear()
    os.environ.update(env)
    if start["cwd"] is not None:
        os.chdir(start["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return True
