"""`llamactl run` while the server cannot reach the deployment's message queue: say so.

The server keeps a task it accepted (it is stored) and sends it on once the queue answers again,
so ``run`` goes on waiting; without a word it would look hung. A daemon thread reads the server's
status (``GET /status/``, cheap) while ``run`` waits and prints, once per outage, what the server
says of this deployment's queue, then once more when the server says nothing of it any longer.
Nothing it does can fail the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from llamactl.cli.progress import run_in_thread

if TYPE_CHECKING:
    from llamactl.client.sync import Client

__all__ = ["OutageWatch"]

CHECK_EVERY = 2.0
"""Seconds between two reads of the server's status."""


class OutageWatch:
    """``with OutageWatch(client, deployment, show): ...wait for the task...``."""

    def __init__(self, client: Client, deployment: str, show: Callable[[str], None]) -> None:
        self._client = client
        self._deployment = deployment
        self._show = show
        self._done = threading.Event()

    def __enter__(self) -> OutageWatch:
        run_in_thread(self._watch, "run-outage")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()

    def trouble(self) -> str | None:
        """What the server says of this deployment's message queue right now, or None."""
        from llamactl.server.types import StatusEnum

        status = self._client.status()
        if status.status is StatusEnum.HEALTHY:
            return None
        mine = f"deployment '{self._deployment}': "
        for part in status.status_message.split("; "):
            if part.startswith(mine):
                return part.removeprefix(mine)
        return None

    def _watch(self) -> None:
        said = False
        while not self._done.wait(CHECK_EVERY):
            try:
                trouble = self.trouble()
            except Exception:
                return
            if self._done.is_set():
                return
            if trouble is not None and not said:
                self._show(
                    f"The server says: {trouble}. The task is stored and goes on once the queue is"
                    " back (Ctrl-C stops waiting, the task stays)"
                )
            elif trouble is None and said:
                self._show("The message queue is back: the task goes on")
            said = trouble is not None
