"""Feedback on long work: a one-line spinner on stderr, only when stderr is a terminal.

Elsewhere (a pipe, a file, CI, a test) nothing is drawn and :meth:`Spinner.print` writes plain
lines, so logs stay readable. rich (which typer brings) draws it; it is imported only when a
spinner is actually shown, so ``llamactl --help`` never pays for it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import typer

from llamactl.cli.style import plain_terminal

__all__ = ["Spinner", "elapsed", "interactive_stderr"]


def interactive_stderr() -> bool:
    """A person watches stderr: it is a terminal, and neither CI nor a dumb terminal says otherwise."""
    import os

    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def elapsed(seconds: float) -> str:
    """``4.2s``, ``1m05s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Text:
    """What the spinner shows, computed at every refresh (so the elapsed time moves on its own)."""

    def __init__(self, spinner: Spinner) -> None:
        self._spinner = spinner

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text(self._spinner.line())


class Spinner:
    """``with Spinner("Running task t1") as spin: spin.update("running")``.

    The line reads ``<text>: <status> (<elapsed>)``; ``status`` may be changed from any thread.
    Lines printed with :meth:`print` appear above it. Off a terminal it draws nothing.
    """

    def __init__(self, text: str, status: str = "", *, enabled: bool | None = None) -> None:
        self.text = text
        self.status = status
        self.enabled = interactive_stderr() if enabled is None else enabled
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._console: Any = None
        self._live: Any = None

    def line(self) -> str:
        with self._lock:
            status = f": {self.status}" if self.status else ""
            return f"{self.text}{status} ({elapsed(time.monotonic() - self._started)})"

    def update(self, status: str | None = None, *, text: str | None = None) -> None:
        with self._lock:
            if status is not None:
                self.status = status
            if text is not None:
                self.text = text

    def print(self, line: str) -> None:
        """A line on stderr, above the spinner when one is drawn."""
        if self._console is not None:
            self._console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            typer.echo(line, err=True)

    def start(self) -> None:
        """Start drawing (at a terminal; nothing otherwise)."""
        if self.enabled and self._live is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, no_color=plain_terminal())
            self._live = self._console.status(_Text(self), spinner="dots")
            self._live.start()

    def __enter__(self) -> Spinner:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._console = None


def run_in_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start ``target`` in a daemon thread (watchers that feed a spinner; they die with the command)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
