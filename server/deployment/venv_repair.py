"""A deployment's virtual environment deleted while it is served (``git clean -fdx``, ``rm -rf
.llamactl``), installed again.

The workers that run keep their interpreter, but the next one the supervisor starts (after a
crash, a reload, a ``max-memory`` replacement) finds no program: the service would stay down
until the server is restarted. When a start fails that way, :class:`VenvRepair` installs the
deployment's python-dependencies again (as ``serve --allow-install`` did at the start), once at a
time, and the supervisor waits for it (:meth:`VenvRepair.wait`) before it starts a worker again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from llamactl.server.config import DeploymentConfig
from llamactl.server.deployment.dependencies import install_python_dependencies

__all__ = ["VenvRepair"]

log = logging.getLogger(__name__)


class VenvRepair:
    """Installs ``config()``'s python-dependencies again when ``python`` is gone."""

    def __init__(self, python: Path, config: Callable[[], DeploymentConfig], *, allow_install: bool) -> None:
        self.python = python
        self._config = config
        self._allow_install = allow_install
        self._task: asyncio.Task[None] | None = None
        self.repairs = 0
        """Installs done again so far."""

    def check(self) -> None:
        """Start installing again if the venv's python is gone (and no install runs)."""
        if self._task is not None or self.python.exists():
            return
        config = self._config()
        log.warning(
            "deployment %s: its virtual environment %s was deleted while the server ran: installing "
            "its python-dependencies again (its workers cannot start until then)",
            config.name,
            self.python.parent.parent,
        )
        self._task = asyncio.create_task(self._install(config))

    async def _install(self, config: DeploymentConfig) -> None:
        try:
            python = await install_python_dependencies(config, allow_install=self._allow_install)
        except Exception as exc:
            log.error(
                "deployment %s: could not install its python-dependencies again: %s (restart the "
                "server once it is fixed)",
                config.name,
                exc,
            )
        else:
            self.repairs += 1
            log.warning(
                "deployment %s: python-dependencies installed again in %s; its workers start again",
                config.name,
                python.parent.parent if python is not None else "the server's environment",
            )
        finally:
            self._task = None

    async def wait(self) -> None:
        """Until the install that runs (if any) has ended: the supervisor awaits it before a
        restart, so that no worker starts in a half-made environment."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
