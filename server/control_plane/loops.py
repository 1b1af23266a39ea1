"""Background loops that never die silently: each one is restarted (with backoff) when it raises,
and its health (running, restarts, last error) can be read at any time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from llamactl.server.aio import cancel_and_wait
from llamactl.server.errors import LlamactlError

__all__ = ["LoopHealth", "Loops"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 10.0
_HEALTHY_AFTER = 30.0
"""A loop that ran this long before failing starts its backoff over."""


@dataclass
class LoopHealth:
    """How one background loop is doing."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


class Loops:
    """Runs named loops (``start(name, body)``) until ``close``; a loop that returns is done, one
    that raises is logged and started again after a backoff."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, LoopHealth] = {}

    def start(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body()`` under ``name`` (no-op if a loop of that name runs already)."""
        if name in self._tasks:
            return
        self.health[name] = health = LoopHealth(name)
        self._tasks[name] = asyncio.create_task(self._run(health, body), name=f"{self._owner}:{name}")

    def running(self, name: str) -> bool:
        return name in self._tasks

    async def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        self.health.pop(name, None)
        if task is not None:
            await cancel_and_wait(task)

    async def close(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)

    async def _run(self, health: LoopHealth, body: Callable[[], Awaitable[None]]) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            health.running = True
            started = time.monotonic()
            try:
                await body()
            except asyncio.CancelledError:
                health.running = False
                raise
            except Exception as exc:
                health.running = False
                health.restarts += 1
                error = f"{type(exc).__name__}: {exc}"
                ran_long = time.monotonic() - started > _HEALTHY_AFTER
                # The same failure again, soon (the store is down, say): said once, not per restart.
                again = error == health.last_error and not ran_long
                health.last_error = error
                health.last_error_at = time.time()
                if ran_long:
                    backoff = _FIRST_BACKOFF
                if again:
                    log.debug(
                        "%s: background loop %s failed again; restarting in %.1f s",
                        self._owner,
                        health.name,
                        backoff,
                    )
                elif isinstance(exc, LlamactlError):  # the store or the queue failed: its message says it all
                    log.error(
                        "%s: background loop %s failed (%s); restarting in %.1f s",
                        self._owner,
                        health.name,
                        exc,
                        backoff,
                    )
                else:
                    log.exception(
                        "%s: background loop %s failed; restarting in %.1f s",
                        self._owner,
                        health.name,
                        backoff,
                    )
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            health.running = False
            self._tasks.pop(health.name, None)
            return
