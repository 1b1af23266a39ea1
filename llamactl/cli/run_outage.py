"""`llamactl run` while the server cannot reach the deployment's message queue or state store,
or the task's service has no worker (its code does not load, its workers keep exiting): say so.

``run`` waits through such an outage (a task the server stored goes on once the queue answers;
one it could not store is sent again once the store answers); without a word it would look hung.
A daemon thread reads the server's status (``GET /status/``, cheap) while ``run`` waits and
prints, once per outage, what the server says it cannot reach for this deployment, then once
more when it says nothing of it any longer. Nothing it does can fail the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from llamactl.cli.progress import run_in_thread

if TYPE_CHECKING:
    from llamactl.client.sync import Client

__all__ = ["OutageWatch"]

CHECK_EVERY = 2.0
"""Seconds between two reads of the server's status."""


class OutageWatch:
    """``with OutageWatch(client, deployment, show, service=...): ...wait for the task...``.

    ``service``: the task's (None: the deployment's default, unknown here: any service's trouble
    is shown, each names its service)."""

    def __init__(
        self, client: Client, deployment: str, show: Callable[[str], None], *, service: str | None = None
    ) -> None:
        self._client = client
        self._deployment = deployment
        self._service = service
        self._show = show
        self._done = threading.Event()

    @contextlib.contextmanager
    def showing(self, show: Callable[[str], None]) -> Iterator[None]:
        """Print with ``show`` inside the block (a spinner's print, while a spinner runs)."""
        before, self._show = self._show, show
        try:
            yield
        finally:
            self._show = before

    def __enter__(self) -> OutageWatch:
        run_in_thread(self._watch, "run-outage")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()

    def trouble(self) -> str | None:
        """What the server says it cannot reach for this deployment (its queue or its store), or
        what is wrong with the task's service, right now; or None."""
        from llamactl.server.types import StatusEnum

        status = self._client.status()
        if status.status is StatusEnum.HEALTHY:
            return None
        mine = f"deployment '{self._deployment}': "
        for part in status.status_message.split("; "):
            if not part.startswith(mine):
                continue
            trouble = part.removeprefix(mine)
            other_service = self._service is not None and not trouble.startswith(f"service '{self._service}'")
            if trouble.startswith("service '") and other_service:
                continue
            return trouble
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
                self._show(f"The server says: {trouble}. Waiting until it is back (Ctrl-C stops waiting)")
            elif trouble is None and said:
                self._show("The server no longer reports it: waiting for the task")
            said = trouble is not None
