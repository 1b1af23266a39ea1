"""`llamactl` at a real terminal: a pseudo-terminal for its stdin, stdout and stderr, read in a
thread, so a test can wait (with a deadline) for what a person would see."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.llamactl.serving import REPO

_TAKE_TERMINAL = "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
"""Run by the new session's leader: make stdin's terminal its controlling one, then run the command."""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Colour and cursor escape sequences."""


def plain(text: str) -> str:
    """``text`` without escape sequences and carriage-return redraws."""
    return ANSI.sub("", text).replace("\r", "\n")


class Terminal:
    """``python -m llamactl ARGS`` with a pseudo-terminal (80x24 by default, TERM=xterm) as every
    stream. ``output`` is everything written so far, escape codes included."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        columns: int = 100,
        controlling: bool = False,
        wrapper: Sequence[str] = (),
    ) -> None:
        """``controlling``: the command leads a session of its own whose controlling terminal this
        is, as in a terminal window, so :meth:`hang_up` sends it SIGHUP; ``wrapper``: a command in
        front of it (``("nohup",)``)."""
        master, slave = pty.openpty()
        os.set_blocking(master, True)
        base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CI", "FORCE_COLOR")}
        full_env = {**base, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40", **(env or {})}
        command = [*wrapper, sys.executable, "-m", "llamactl", *args]
        if controlling:
            command = [sys.executable, "-c", _TAKE_TERMINAL, *command]
        self.process = subprocess.Popen(
            command,
            cwd=cwd or REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            close_fds=True,
            start_new_session=controlling,
        )
        os.close(slave)
        self._master = master
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self._stop_reading = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # select with a timeout, not a blocking read: a read in progress would hold the terminal
        # open past hang_up's close, and the hangup would wait for the next output
        while not self._stop_reading.is_set():
            if not select.select([self._master], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data.decode("utf-8", "replace"))

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does: the kernel sends SIGHUP to the session
        it controls (see ``controlling``)."""
        self._stop_reading.set()
        self._reader.join(5)
        os.close(self._master)
        self._master = -1

    def type(self, text: str) -> None:
        """Type ``text`` at the terminal (``"\\n"`` is Enter, ``"\\x04"`` Ctrl-D at a line's start)."""
        os.write(self._master, text.encode())

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of the regex ``pattern`` in the plain output, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, plain(self.output))
            if found:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {pattern!r} within {timeout}s; the terminal shows:\n{plain(self.output)}"
                )
            if self.process.poll() is not None and not self._reader.is_alive():
                raise EOFError(
                    f"exited with {self.process.returncode} before {pattern!r}:\n{plain(self.output)}"
                )
            time.sleep(0.02)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stop_reading.set()
        self._reader.join(5)
        if self._master >= 0:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = -1

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_at_terminal(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run to the end at a terminal: the exit code and the raw output (escape codes included)."""
    with Terminal(*args, env=env) as terminal:
        code = terminal.wait(timeout)
        return code, terminal.output
