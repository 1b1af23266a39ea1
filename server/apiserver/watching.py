"""``serve --watch``: one file watcher per running deployment.

See :mod:`llamactl.server.deployment.watcher`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from llamactl.server.aio import cancel_and_wait
from llamactl.server.deployment import Deployment
from llamactl.server.deployment.watcher import DeploymentWatcher

__all__ = ["Watchers"]

log = logging.getLogger("llamactl.server.apiserver")


class Watchers:
    """Deployment hooks that watch each deployment loaded from a file while it runs."""

    def __init__(self, on_event: Callable[[str], None] | None, *, force_polling: bool | None = None) -> None:
        self._on_event = on_event
        self._force_polling = force_polling
        self._running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    def _say(self, line: str) -> None:
        if self._on_event is not None:
            self._on_event(line)
        else:
            log.info("%s", line)

    async def started(self, deployment: Deployment) -> None:
        if deployment.config.file is None:
            self._say(f"{deployment.name}: not watched (it was uploaded, not loaded from a file here)")
            return
        watcher = DeploymentWatcher(deployment, on_event=self._say, force_polling=self._force_polling)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop), name=f"watch:{deployment.name}")
        self._running[deployment.name] = (task, stop)
        ready = asyncio.create_task(watcher.ready.wait())
        await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done() and task.exception() is not None:
            self._say(f"{deployment.name}: cannot watch its files: {task.exception()}")
            return
        self._say(f"{deployment.name}: watching {deployment.config.file.parent} for changes")

    async def stopping(self, deployment: Deployment) -> None:
        entry = self._running.pop(deployment.name, None)
        if entry is not None:
            await _stop(*entry)

    async def close(self) -> None:
        entries = list(self._running.values())
        self._running.clear()
        for task, stop in entries:
            await _stop(task, stop)


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    try:
        async with asyncio.timeout(5):
            await task
    except TimeoutError:
        await cancel_and_wait(task)
    except Exception as exc:
        log.warning("a file watcher ended with an error: %s", exc)
