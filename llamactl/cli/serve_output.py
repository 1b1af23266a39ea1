"""What `llamactl serve` writes to stderr: aligned service lines, warnings, worker logs, access log.

The engine reports in sentences (``demo/echo (Echo) is up: 1/1 replica(s) ready``, ``demo:
reloaded echo (generation 2) in 410 ms``); here each becomes one line with the service in its own
column, so a screen of them reads as a table::

    demo/echo        up         1/1 replicas ready (Echo)
    demo/echo        reloaded   generation 2 in 410 ms
    demo             ready      2 services

`llamactl worker` reports each replica the same way (``demo/echo#host-41-1 (Echo) is up: pid 42``).

Worker lines are shown by level (``--log-level``; default: warnings, errors and whatever the
worker prints itself), each behind its replica's name.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from llamactl.cli.style import Styled, styled, use_color, warning_label

if TYPE_CHECKING:
    from llamactl.cli.line_writer import LineWriter
    from llamactl.cli.progress import Spinner

__all__ = ["LEVELS", "DrainProgress", "RecordHandler", "ServeOutput", "logging_to"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_UP = re.compile(
    r"^(?P<key>\S+/\S+) \((?P<name>.*)\) is up: (?P<ready>\d+)/(?P<want>\d+) replica\(s\) ready$"
)
_LOADING = re.compile(r"^(?P<key>\S+/\S+) \((?P<name>.*)\) is still loading: (?P<rest>.+)$")
_REMOTE = re.compile(r"^(?P<key>\S+/\S+) \((?P<name>.*)\) has no replica here: (?P<rest>.+)$")
_REPLICA_UP = re.compile(r"^(?P<key>\S+/\S+#\S+) \((?P<name>.*)\) is up: pid (?P<pid>\d+)$")
_REPLICA_EXITED = re.compile(
    r"^(?P<key>\S+/\S+#\S+) exited with code (?P<code>\S+)(?P<load> \(its code does not load\))?, "
    r"restarting in (?P<delay>\S+ s)$"
)
_FETCHING = re.compile(r"^(?P<key>\S+/\S+): fetching (?P<rest>.+)$")
_FETCHED = re.compile(r"^(?P<key>\S+/\S+): checked out (?P<rest>.+)$")
_REMOVED = re.compile(r"^(?P<key>\S+/\S+): removed from the deployment file, (?P<rest>.+)$")
_RELOADING = re.compile(r"^(?P<key>\S+/\S+): source changed, reloading$")
_RELOAD_AGAIN = re.compile(r"^(?P<key>\S+/\S+): source changed again: (?P<rest>.+)$")
_NOT_RELOADED = re.compile(r"^(?P<key>\S+/\S+): not reloaded: (?P<why>.+)$")
_RELOADED = re.compile(
    r"^(?P<dep>[^\s:]+): reloaded (?P<svc>\S+) \(generation (?P<gen>\d+)\) in (?P<took>.+)$"
)
_RELOAD_FAILED = re.compile(
    r"^(?P<dep>[^\s:]+): reload of (?P<svc>\S+) \(generation (?P<gen>\d+)\) failed after (?P<took>[^:]+): "
    r"(?P<error>.*)$"
)
_READY = re.compile(r"^deployment '(?P<dep>[^']+)' is ready \((?P<count>\d+) service\(s\)\)$")
_DEPLOYMENT_NOTE = re.compile(r"^(?P<dep>[^\s:/]+): (?P<rest>.+)$")
_WORKER_LOG = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[[^\]]*\] "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<rest>.*)$"
)
_LEVEL_NUMBERS = {**{name.upper(): number for name, number in LEVELS.items()}, "CRITICAL": logging.CRITICAL}
_VERB_WIDTH = 10
_UP_VERB = styled("up", "green", glyph="✓")
_FAILED_VERB = styled("failed", "red", glyph="✗")


def _to_stderr(line: str) -> None:
    typer.echo(line, err=True)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class ServeOutput:
    """Formats and writes everything `llamactl serve` says (all on stderr).

    Args:
        level: the lowest level of worker and server log records shown.
        quiet: only errors (worker errors, failed reloads) and the Listening line.
        keys: ``deployment/service`` names known up front, so the first lines are as wide as the last.
        write: where lines go (default: stderr); a drain spinner swaps in its own.

    A line that cannot be written is dropped, and the server goes on: whoever read the output may
    be gone (a ``| tee`` killed, a log collector restarted, a closed terminal) or its disk full.
    Once the reader is gone for good (a broken pipe) nothing more is tried. Inside
    :meth:`in_background`, a reader that stops reading costs lines, never the server's time.
    """

    def __init__(
        self,
        *,
        level: int = logging.WARNING,
        quiet: bool = False,
        keys: Iterable[str] = (),
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.level = logging.ERROR if quiet else level
        self.quiet = quiet
        self.color = use_color(sys.stderr)
        self.width = max([16, *(len(k) for k in keys)])
        self._sink = write or _to_stderr
        self._reader_gone = False
        self._lines: LineWriter | None = None
        self._last_level: dict[str, int] = {}
        self._shown = True
        """Whether the last engine line was written (its continuation lines follow it)."""

    def set_writer(self, write: Callable[[str], None] | None) -> None:
        self._sink = write or _to_stderr

    @contextmanager
    def in_background(self) -> Iterator[None]:
        """While the block runs, lines are written by a thread (``cli/line_writer.py``): a reader
        that stops reading never blocks the caller. At its end what is queued is written, for at
        most :data:`~llamactl.cli.line_writer.FLUSH_TIMEOUT` seconds."""
        from llamactl.cli.line_writer import LineWriter

        self._lines = LineWriter(self._write_now)
        try:
            yield
        finally:
            lines, self._lines = self._lines, None
            lines.close()

    def _write(self, line: str) -> None:
        lines = self._lines
        if lines is not None:
            lines.put(line)
        else:
            self._write_now(line)

    def _write_now(self, line: str) -> None:
        if self._reader_gone:
            return
        try:
            self._sink(line)
        except BrokenPipeError:
            self._reader_gone = True
        except OSError:
            pass  # a full disk or an I/O error: these lines are lost, the next may get through

    def line(self, text: str) -> None:
        self._write(text)

    # --- the engine's lines ------------------------------------------------------------------

    def _row(self, key: str, verb: Styled, detail: str, *, important: bool = False) -> None:
        self._shown = not self.quiet or important
        if not self._shown:
            return
        self.width = max(self.width, len(key))
        pad = " " * max(1, _VERB_WIDTH - verb.width(self.color))
        self._write(f"{key.ljust(self.width)}  {verb.render(self.color)}{pad}{detail}".rstrip())

    def event(self, text: str) -> None:
        """One line the engine reports (a service up, a reload, a note): aligned when it is known."""
        if text.startswith("    "):
            # The rest of the line before (a failed reload's traceback): shown when that one was.
            if self._shown:
                self._write(" " * (self.width + 2) + text.strip())
        elif match := _UP.match(text):
            want, ready = int(match["want"]), int(match["ready"])
            if want == 0:  # replicas: 0 here, so every ready one is a `llamactl worker` elsewhere
                detail = f"{_plural(ready, 'remote replica')} ready ({match['name']})"
            else:
                detail = f"{ready}/{want} {'replica' if want == 1 else 'replicas'} ready ({match['name']})"
            self._row(match["key"], _UP_VERB, detail)
        elif match := _REPLICA_UP.match(text):
            self._row(match["key"], _UP_VERB, f"pid {match['pid']} ({match['name']})")
        elif match := _REPLICA_EXITED.match(text):
            why = "its code does not load" if match["load"] else f"exited with code {match['code']}"
            self._row(match["key"], styled("restarting", "yellow"), f"{why}; again in {match['delay']}")
        elif match := _LOADING.match(text):
            self._row(match["key"], styled("loading", "yellow"), f"{match['rest']} ({match['name']})")
        elif match := _REMOTE.match(text):
            self._row(match["key"], styled("remote", "cyan"), f"{match['rest']} ({match['name']})")
        elif match := _FETCHING.match(text):
            self._row(match["key"], styled("fetching", "cyan"), match["rest"])
        elif match := _FETCHED.match(text):
            self._row(match["key"], styled("fetched", "green", glyph="✓"), match["rest"])
        elif match := _REMOVED.match(text):
            self._row(match["key"], styled("removed", "yellow"), match["rest"])
        elif match := _RELOADING.match(text):
            self._row(match["key"], styled("reloading", "cyan"), "source changed")
        elif match := _RELOAD_AGAIN.match(text):
            self._row(match["key"], styled("changed", "cyan"), f"again while reloading: {match['rest']}")
        elif match := _NOT_RELOADED.match(text):
            self._row(match["key"], _FAILED_VERB, f"not reloaded: {match['why']}", important=True)
        elif match := _RELOADED.match(text):
            detail = f"generation {match['gen']} in {match['took']}"
            self._row(f"{match['dep']}/{match['svc']}", styled("reloaded", "green", glyph="✓"), detail)
        elif match := _RELOAD_FAILED.match(text):
            detail = f"generation {match['gen']} not loaded after {match['took']}: {match['error']}"
            self._row(f"{match['dep']}/{match['svc']}", _FAILED_VERB, detail, important=True)
        elif match := _READY.match(text):
            self._row(
                match["dep"], styled("ready", "green", glyph="✓"), _plural(int(match["count"]), "service")
            )
        elif match := _DEPLOYMENT_NOTE.match(text):
            self._note(match["dep"], match["rest"])
        else:
            self._shown = not self.quiet
            if self._shown:
                self._write(text)

    def _note(self, deployment: str, rest: str) -> None:
        """A line about a whole deployment (watching, its control plane, an edited file)."""
        if rest.startswith(("not applied", "cannot watch")):
            self._row(deployment, _FAILED_VERB, rest, important=True)
        elif rest.startswith("watching "):
            self._row(deployment, styled("watching", "cyan"), rest.removeprefix("watching "))
        elif rest.startswith("control plane on "):
            self._row(deployment, styled("listening", "cyan"), rest)
        elif rest.endswith(" changed, applying it"):
            self._row(deployment, styled("applying", "cyan"), rest.removesuffix(", applying it"))
        elif rest == "deleting, its running tasks finish first":
            self._row(deployment, styled("deleting", "yellow"), "its running tasks finish first")
        elif rest == "deleted, its workers stopped":
            self._row(deployment, styled("deleted", "yellow"), "its workers stopped")
        elif rest.startswith("applied, "):
            self._row(deployment, styled("applied", "green", glyph="✓"), rest.removeprefix("applied, "))
        else:
            self._row(deployment, styled("note"), rest)

    def warning(self, message: str) -> None:
        """A warning about a deployment file, as `validate` and `deploy` print it."""
        self._write(f"{warning_label().render(self.color)} {message}")

    # --- logs --------------------------------------------------------------------------------

    def worker(self, name: str, text: str) -> None:
        """A line a worker process wrote: shown when its level is at least ``level``.

        Lines that are not log records (what the user's code prints, a crash's traceback) count as
        warnings, except the continuation lines of a record, which follow its level.
        """
        if match := _WORKER_LOG.match(text):
            level = _LEVEL_NUMBERS[match["level"]]
            self._last_level[name] = level
            shown = f"{match['level']} {match['rest']}"
        elif text.startswith((" ", "\t")):
            level = self._last_level.get(name, logging.WARNING)
            shown = text
        else:  # its own indented lines (a printed traceback's frames) follow it, as a record's do
            level = self._last_level[name] = logging.WARNING
            shown = text
        if level < self.level:
            return
        if level >= logging.ERROR:
            shown = styled(shown, "red").render(self.color)
        self._write(f"{name.ljust(self.width)} | {shown}")

    def record(self, record: logging.LogRecord) -> None:
        """A log record of the server process itself."""
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        for line in text.splitlines():
            self._write(line)

    def access(self, text: str) -> None:
        self._write(text)


class RecordHandler(logging.Handler):
    """Sends the server process's log records to a :class:`ServeOutput`."""

    def __init__(self, output: ServeOutput) -> None:
        super().__init__()
        self._output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._output.record(record)
        except Exception:
            self.handleError(record)


class DrainProgress:
    """The shutdown's progress: how many tasks still run, and that a second Ctrl-C stops at once.

    At a terminal one spinner line is redrawn; elsewhere a line is written each time the count
    changes.
    """

    def __init__(self, output: ServeOutput, spinner: Spinner) -> None:
        self._output = output
        self._spinner = spinner
        self._started = False

    def begin(self, *, hangup: bool = False) -> None:
        """Say the server is stopping; ``hangup``: because its terminal closed (SIGHUP), where
        nobody sees a spinner, so only the line is written (for a log that stderr goes to)."""
        self._started = True
        if hangup:
            self._spinner.enabled = False
            self._output.line(
                "Stopping: the terminal closed (SIGHUP); letting running tasks finish "
                "(`nohup llamactl serve ...` keeps a server running after its terminal closes)..."
            )
            return
        self._output.line("Stopping: letting running tasks finish (Ctrl-C again to stop at once)...")
        if self._spinner.enabled:
            self._spinner.start()
            self._output.set_writer(self._spinner.print)

    def update(self, running: int) -> None:
        if not self._started:
            return  # a server that failed to start stops too; it was not asked to, so say nothing
        if running:
            tasks = "task" if running == 1 else "tasks"
            text = f"waiting for {running} running {tasks}, Ctrl-C again to stop now"
        else:
            text = "no task left running"
        if self._spinner.enabled:
            self._spinner.update(text)
        else:
            self._output.line(f"Stopping: {text}")

    def end(self) -> None:
        if self._started and self._spinner.enabled:
            self._spinner.stop()
            self._output.set_writer(None)


@contextmanager
def logging_to(output: ServeOutput) -> Iterator[None]:
    """The server's own log records and deployment-file warnings go through ``output`` (the
    latter also when `--watch` reloads an edited file)."""
    root = logging.getLogger()
    handler = RecordHandler(output)
    saved_level, saved_show = root.level, warnings.showwarning
    root.addHandler(handler)
    root.setLevel(output.level)

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        # Imported here, not above: `serve` starts its workers before it imports the server.
        from llamactl.server.config import DeploymentConfigWarning

        if isinstance(message, DeploymentConfigWarning):
            output.warning(str(message))
        else:
            saved_show(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved_show
        root.removeHandler(handler)
        root.setLevel(saved_level)
