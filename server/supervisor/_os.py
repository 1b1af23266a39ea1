"""Spawning children that cannot outlive us, and killing their process groups.

Why ``preexec_fn`` with ctypes ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` rather than a launcher script:
it costs no extra process or interpreter start, and the child runs the real command directly so
its pid is the replica's pid. ``preexec_fn`` is documented as unsafe when the parent has threads
(the child of ``fork`` may find a lock held by a thread that no longer exists). Our hook only calls
a ``prctl`` function pointer resolved *before* the fork and ``getppid``/``_exit``: no import, no
allocation behind a lock other than the GIL, which the forking thread holds. asyncio calls
``Popen`` in the event loop's thread, which matters because the death signal fires when the
*thread* that forked the child exits: run the supervisor in a thread that lives as long as it.

PDEATHSIG covers the replica itself, not what it spawns. Each child gets its own session (so a
terminal Ctrl-C reaches only the server, which stops workers in order) and therefore its own
process group, which we kill as a whole on stop. An ``atexit`` hook kills the groups still alive
when the interpreter exits without :meth:`Supervisor.close`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from .exit_note import EXIT_NOTE_ENV, ExitNote
from .models import ProcessSpec

__all__ = [
    "Child",
    "child_environment",
    "death_signal_hook",
    "forget_group",
    "is_stopped",
    "kill_group",
    "spawn",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    fn: Callable[..., int] = prctl
    return fn


_prctl = _load_prctl()


def death_signal_hook(parent_pid: int, sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get ``sig`` when the thread that forked it (in the
    process ``parent_pid``) exits, however it ends; None where Linux's prctl is missing."""
    prctl = _prctl
    if prctl is None:
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


# Process groups we started and have not yet seen empty, for the atexit safety net.
_live_groups: set[int] = set()


@atexit.register
def _kill_live_groups() -> None:
    for pgid in list(_live_groups):
        kill_group(pgid, signal.SIGKILL)


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Tracks the exit of the process itself, apart from its output pipe.

    ``asyncio.subprocess.Process.wait()`` only returns once every pipe is closed too, so a
    grandchild holding stdout open would hide the exit of the replica.
    """

    def __init__(self, name: str, output: Callable[[str, str], None] | None, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()
        self.name = name
        self.output = output
        self._limit = limit
        self._buf = bytearray()
        self.captures = output is not None
        self.output_read = asyncio.Event()
        """Set at each chunk of output read; cleared by whoever waits for the next one."""
        if output is None:
            self.output_closed.set_result(None)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        self.output_read.set()
        self._buf += chunk
        if b"\n" in chunk:
            *lines, rest = self._buf.split(b"\n")
            self._buf = bytearray(rest)
            for line in lines:
                self._emit(line)
        if len(self._buf) > self._limit:  # an endless line: hand it over in pieces
            self._emit(bytes(self._buf))
            self._buf.clear()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 0:
            return  # its stdin (a prestarted process's start, handed over)
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()
        if not self.output_closed.done():
            self.output_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _emit(self, raw: bytes | bytearray) -> None:
        assert self.output is not None
        try:
            self.output(self.name, raw.decode("utf-8", errors="replace").rstrip("\r"))
        except Exception:
            log.exception("output callback failed for %s", self.name)


class Child:
    """One spawned process: its pid, its exit, its output pipe."""

    def __init__(
        self, transport: asyncio.SubprocessTransport, protocol: _ChildProtocol, note: ExitNote
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._note = note
        self.pid: int = transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    async def wait(self) -> int:
        """Wait for the process itself to exit (not for its output pipe) and return its status."""
        await asyncio.shield(self._protocol.exited)
        code = self.returncode
        assert code is not None
        return code

    def declared(self) -> bool:
        """After its exit: the process said it exits with this code on purpose (``exit_note``)."""
        return self.returncode is not None and self.returncode == self._note.declared()

    async def answer(self, sig: int, *, quiet: float, within: float) -> bool:
        """Send ``sig`` to this process alone (not its group) and wait for what it prints in
        answer: until output came and then none for ``quiet`` seconds, ``within`` seconds at
        most in all. False when the process is gone or nothing came; True at once when its
        output is not captured (it goes straight where ours goes)."""
        read = self._protocol.output_read
        read.clear()
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        if not self._protocol.captures:
            return True  # it prints straight into our own output: nothing to wait for here
        came = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await read.wait()
                came = True
                while True:
                    read.clear()
                    try:
                        async with asyncio.timeout(quiet):
                            await read.wait()
                    except TimeoutError:
                        return True
        return came

    def hand_over(self, name: str, output: Callable[[str, str], None] | None, start: bytes) -> bool:
        """Send a prestarted process its ``start`` on stdin and close it; from now on its output
        lines go to ``output`` under ``name``. False when its stdin is gone (it has died)."""
        pipe = self._transport.get_pipe_transport(0)
        if pipe is None or pipe.is_closing() or self.returncode is not None or _exited(self.pid):
            return False
        stdin = cast(asyncio.WriteTransport, pipe)  # uvloop's is not a subclass of it
        self._protocol.name = name
        self._protocol.output = output
        stdin.write(start)
        stdin.close()  # after what was written has gone out
        return True

    def kill(self) -> None:
        """Kill the process and its group at once and let go of it (:meth:`wait` still says when
        it is gone)."""
        kill_group(self.pid, signal.SIGKILL)
        forget_group(self.pid)
        self._transport.close()
        self._note.close()

    async def close(self, drain: float) -> None:
        """After exit: read what is left of the output for up to ``drain`` seconds, then let go."""
        await asyncio.wait({self._protocol.output_closed}, timeout=drain)
        # Closes our end of a pipe that someone outside the process group may still hold.
        self._transport.close()
        self._note.close()


def child_environment(spec: ProcessSpec) -> dict[str, str]:
    """The environment ``spec`` runs with: ours without its hidden variables, then its own."""
    return {**{k: v for k, v in os.environ.items() if k not in spec.hidden_env}, **spec.env}


async def spawn(
    spec: ProcessSpec,
    *,
    output: Callable[[str, str], None] | None,
    limit: int = 1 << 20,
    stdin_pipe: bool = False,
) -> Child:
    """Start ``spec`` in its own session, with a parent-death signal, stdin from /dev/null (or,
    with ``stdin_pipe``, a pipe that :meth:`Child.hand_over` writes to).

    With ``output``, stdout and stderr are merged into one pipe and each line is passed as
    ``output(spec.name, line)``; otherwise they are inherited.
    """
    loop = asyncio.get_running_loop()
    capture = asyncio.subprocess.PIPE if output is not None else None
    note = ExitNote()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ChildProtocol(spec.name, output, limit),
            *spec.argv,
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=capture,
            stderr=asyncio.subprocess.STDOUT if output is not None else None,
            env={**child_environment(spec), EXIT_NOTE_ENV: str(note.child_fd)},
            cwd=spec.cwd,
            start_new_session=True,
            preexec_fn=death_signal_hook(os.getpid()),
            pass_fds=(note.child_fd,),
        )
    except FileNotFoundError as exc:  # uvloop's says "No such file or directory", naming nothing
        note.close()
        if missing := _missing(spec):
            raise FileNotFoundError(exc.errno, f"its {missing[0]} is missing", missing[1]) from exc
        raise
    except BaseException:
        note.close()
        raise
    note.sent()
    child = Child(transport, protocol, note)
    _live_groups.add(child.pid)
    return child


def _missing(spec: ProcessSpec) -> tuple[str, str] | None:
    """What of ``spec`` is not there: ("program", its path) or ("folder", its path)."""
    for what, path in (("program", spec.argv[0]), ("folder", spec.cwd)):
        if path is not None and not os.path.exists(path):
            return what, str(path)
    return None


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        _live_groups.discard(pgid)
        return False
    except PermissionError:  # pragma: no cover - pgid reused by someone else's process
        _live_groups.discard(pgid)
        return False
    return True


def forget_group(pgid: int) -> None:
    """Stop tracking ``pgid`` for the atexit hook (after its final SIGKILL sweep)."""
    _live_groups.discard(pgid)


def _state(pid: int) -> bytes | None:
    """Process ``pid``'s state letter from ``/proc/<pid>/stat`` (``b"R"``, ``b"T"``, ``b"Z"``...),
    ``b""`` when it is gone (reaped), None when this system does not say (no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):  # the latter: reaped between open and read
        return b"" if Path("/proc/self").exists() else None
    except OSError:
        return None
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows its last ")"
    fields = stat[stat.rfind(b")") + 1 :].split()
    return fields[0] if fields else None


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has exited though the loop has not seen it yet: a zombie, or
    reaped by the loop's child watcher before its callback ran. False when this system does
    not say (no ``/proc``)."""
    return _state(pid) in (b"", b"Z", b"X")


def is_stopped(pid: int) -> bool | None:
    """Whether process ``pid`` is stopped (a SIGSTOP, a debugger holding it): it runs no code
    and answers nothing but SIGKILL and SIGCONT. None when the process is gone or this system
    does not say (no ``/proc``: Linux only)."""
    state = _state(pid)
    return state in (b"T", b"t") if state else None
