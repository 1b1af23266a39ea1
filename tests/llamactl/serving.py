"""Test helpers: small workflow apps written into a folder, and `llamactl serve` as a subprocess."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"Listening on (http://\S+)")

FLOWS = (REPO / "tests" / "e2e" / "apps" / "engine" / "src" / "flows.py").read_text()
"""The workflows every end-to-end test app uses (one copy, shared with the engine and API tests)."""

FUNCS = """
import asyncio


async def greet(name: str = "world", times: int = 1) -> str:
    return " ".join([f"hello {name}"] * times)


async def kinds(**kwargs: object) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in kwargs.items()}


async def slow(seconds: float = 60) -> str:
    await asyncio.sleep(float(seconds))
    return "done"


async def ticks(n: int = 10, every: float = 0.2):
    for i in range(int(n)):
        yield {"i": i}
        await asyncio.sleep(float(every))
    yield {"i": int(n), "done": True}
"""

SERVICES = {
    "echo": "flows:echo_workflow",
    "stream": "flows:streaming_workflow",
    "hitl": "flows:hitl_workflow",
    "counter": "flows:counter_workflow",
    "boom": "flows:failing_workflow",
    "func": "funcs:greet",
    "kinds": "funcs:kinds",
    "slow": "funcs:slow",
}


def write_app(folder: Path, name: str, services: dict[str, str] | None = None) -> Path:
    """A deployment named ``name`` in ``folder`` (default service: the first); returns its file."""
    services = services or SERVICES
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "flows.py").write_text(FLOWS)
    (src / "funcs.py").write_text(FUNCS)
    lines = [f"name: {name}", f"default-service: {next(iter(services))}", "services:"]
    for service, path in services.items():
        lines += [
            f"  {service}:",
            f"    name: {service.title()}",
            "    source: {type: local, location: src}",
            f"    path: {path}",
        ]
    file = folder / "deployment.yml"
    file.write_text("\n".join(lines) + "\n")
    return file


class Lines:
    """Collects a pipe's lines in a thread, so a test can wait for one with a deadline."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in iter(pipe.readline, ""):  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no such line within {timeout}s; got:\n" + "\n".join(self.lines[-40:]))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError("the stream ended; got:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            if predicate(line):
                return line

    def so_far(self) -> list[str]:
        """Every line read until now, without waiting for more."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is not None:
                self.lines.append(line)

    def rest(self, timeout: float = 10) -> list[str]:
        """Every remaining line until the pipe closes."""
        self._thread.join(timeout)
        return self.so_far()


def llamactl(
    *args: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``python -m llamactl ARGS`` with piped stderr (and stdout, unless told otherwise)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llamactl", *args],
        cwd=REPO,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def reaped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``process`` until the block ends; then killed if it still runs, its pipes closed, waited for."""
    with process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (Linux)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found.update(int(p) for p in text.split())
    return found


def waiting_spare(pid: int) -> bool:
    """A worker interpreter `serve` started ahead (with ``--watch``, the spares it keeps for a hot
    reload), still waiting for its start: its stdin is the pipe the start comes through, a
    worker's is /dev/null."""
    try:
        return os.readlink(f"/proc/{pid}/fd/0") != os.devnull
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


class Server:
    """`llamactl serve FILE... --port 0` in a subprocess; ``url`` from its `Listening on` line."""

    def __init__(self, *files: Path, ready_timeout: float = 90, extra: Sequence[str] = ()) -> None:
        self.process = llamactl("serve", *map(str, files), "--port", "0", *extra, stdout=subprocess.DEVNULL)
        assert self.process.stderr is not None
        self.stderr = Lines(self.process.stderr)
        try:
            line = self.stderr.wait_for(lambda text: LISTENING.search(text) is not None, ready_timeout)
        except BaseException:
            self.process.kill()
            self.process.wait()
            self.stderr.rest()
            self.process.stderr.close()
            raise
        match = LISTENING.search(line)
        assert match is not None
        self.url = match.group(1)
        self.workers_seen: set[int] = set()

    def note_workers(self) -> set[int]:
        self.workers_seen |= children(self.process.pid)
        return self.workers_seen

    def stop(self, timeout: float = 60) -> int:
        """SIGINT, then the exit code; asserts no worker process outlived the server."""
        self.note_workers()
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.stderr.rest()
            assert self.process.stderr is not None
            self.process.stderr.close()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in self.workers_seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in self.workers_seen if alive(p)]
        assert not left, f"workers outlived the server: {left}"
        return code


class Workers:
    """`llamactl worker FILE ARGS...` in a subprocess, started once it says Ready."""

    def __init__(self, file: Path, *args: str, ready_timeout: float = 90) -> None:
        self.process = llamactl("worker", str(file), *args, stdout=subprocess.DEVNULL)
        assert self.process.stderr is not None
        self.stderr = Lines(self.process.stderr)
        try:
            self.stderr.wait_for(lambda line: line.startswith("Ready."), ready_timeout)
        except BaseException:
            self.kill()
            raise
        self.seen = children(self.process.pid)

    def signal(self, sig: signal.Signals, timeout: float = 60) -> int:
        """Send ``sig``, then the exit code; asserts no worker process outlived it."""
        self.seen |= children(self.process.pid)
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            self._close()
        left = [pid for pid in self.seen if alive(pid)]
        assert not left, f"workers outlived `llamactl worker`: {left}"
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        self.stderr.rest()
        assert self.process.stderr is not None
        self.process.stderr.close()
