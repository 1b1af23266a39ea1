"""Start a server subprocess, wait for its ``Listening on http://HOST:PORT`` line, stop it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llamactl.server.supervisor import death_signal_hook

__all__ = ["ServerProcess", "ServerStartError"]

_LISTENING = re.compile(rb"Listening on http://([^:/\s]+):(\d+)")


class ServerStartError(RuntimeError):
    """The server exited or stayed silent instead of printing its Listening line."""


@dataclass(slots=True)
class ServerProcess:
    """A server subprocess; ``async with`` starts it and stops it (SIGINT, then SIGKILL).

    The server gets SIGTERM when this process ends without stopping it (a benchmark killed or
    sent SIGTERM skips its ``finally`` blocks), so no server outlives its benchmark."""

    argv: Sequence[str]
    cwd: Path | None = None
    start_timeout: float = 60.0
    host: str = ""
    port: int = 0
    spawned_at: float = 0.0
    """``time.perf_counter()`` just before the spawn."""
    listening_at: float = 0.0
    """``time.perf_counter()`` when the Listening line was read."""
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    _proc: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def start_seconds(self) -> float:
        """Spawn to Listening line."""
        return self.listening_at - self.spawned_at

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawn the server and return once it printed its Listening line."""
        self.spawned_at = time.perf_counter()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=death_signal_hook(os.getpid(), signal.SIGTERM),
        )
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._wait_listening()
        except TimeoutError:
            await self.stop()
            raise ServerStartError(self._explain(f"no Listening line within {self.start_timeout}s")) from None
        except ServerStartError:
            await self.stop()
            raise
        self._drain = asyncio.create_task(self._drain_stderr())

    async def _wait_listening(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                code = await self._proc.wait()
                raise ServerStartError(self._explain(f"the server exited with code {code}"))
            self.stderr_tail.append(line.decode(errors="replace").rstrip())
            match = _LISTENING.search(line)
            if match:
                self.listening_at = time.perf_counter()
                self.host, self.port = match.group(1).decode(), int(match.group(2))
                return

    async def _drain_stderr(self) -> None:
        """Keep reading stderr so the server never blocks on a full pipe."""
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    def _explain(self, what: str) -> str:
        tail = "\n".join(self.stderr_tail)
        return f"{' '.join(self.argv)}: {what}; its stderr ended with:\n{tail}"

    async def stop(self, grace: float = 20.0) -> None:
        """SIGINT, wait up to ``grace`` seconds, then SIGKILL (idempotent)."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._drain
            self._drain = None
