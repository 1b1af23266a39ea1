"""The Supervisor: runs replicas as child processes, restarts them with backoff, stops them whole.

Each replica is driven by one asyncio task (:meth:`Supervisor._supervise`) that owns its process
from first spawn to final reap, so a stop and a crash can never both act on the same process.

Keys are opaque to the supervisor. Hot reload runs two generations side by side by giving them
different keys (e.g. ``"echo#1@g2"`` next to ``"echo#1@g1"``), watching the new one's events
(an ``exited`` with exit code 3 is a load error) and stopping the old one with a drain grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from ._os import Child, forget_group, is_stopped, kill_group, spawn
from .models import EXIT_REPLACE, EventKind, ProcessSpec, ReplicaProcess, RestartPolicy, SupervisorEvent
from .prestart import take

__all__ = ["Supervisor", "prefixed_output"]

log = logging.getLogger(__name__)

_DEFAULT_POLICY = RestartPolicy()


def prefixed_output(write: Callable[[str], object] | None = None) -> Callable[[str, str], None]:
    """An ``output`` callback writing ``"<replica name> | <line>"`` lines (to stderr by default)."""

    def output(name: str, line: str) -> None:
        (write or sys.stderr.write)(f"{name} | {line}\n")

    return output


class _Replica:
    def __init__(self, key: str, spec: ProcessSpec, policy: RestartPolicy) -> None:
        self.key = key
        self.spec = spec
        self.policy = policy
        self.view = ReplicaProcess(key=key, name=spec.name)
        self.proc: Child | None = None
        self.spawned_at = 0.0
        self.last_pid: int | None = None
        """Pid of the latest process, kept after it exits for the events."""
        self.stop = asyncio.Event()
        self.grace = 0.0
        self.first_spawn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[int | None] | None = None


class Supervisor:
    """Starts, watches, restarts and stops worker replicas (child processes) on the running loop.

    Children are killed when this process dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``), run
    in their own session and process group (a terminal Ctrl-C does not reach them; a stop takes
    their own children too), and read stdin from ``/dev/null``.

    :param on_event: called synchronously with every :class:`SupervisorEvent`; its owner then
        says a replica's exit in its own words (logged here at INFO only; WARNING without one).
    :param output: when given, each replica's stdout and stderr (merged) are read line by line and
        passed as ``output(replica name, line)``; otherwise the children inherit ours.
    :param stop_grace: default seconds between SIGTERM and SIGKILL on a stop.
    :param output_drain: how long to keep reading a dead replica's pipe (its descendants that left
        the process group may hold it open) before giving up on it.
    :param before_restart: awaited before each restart, after the backoff (the deployment puts
        back what its workers need, a deleted virtual environment say); a stop ends the wait.
    :param last_words: a signal sent to a replica still running at the end of its stop grace,
        before it is killed: what it prints in answer (where it is stuck) comes through
        ``output`` first (see :meth:`ask`).
    """

    def __init__(
        self,
        *,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        output: Callable[[str, str], None] | None = None,
        stop_grace: float = 10.0,
        output_drain: float = 1.0,
        before_restart: Callable[[], Awaitable[None]] | None = None,
        last_words: int | None = None,
    ) -> None:
        self._on_event = on_event
        self._last_words = last_words
        self._before_restart = before_restart
        self._output = output
        self._stop_grace = stop_grace
        self._output_drain = output_drain
        self._replicas: dict[str, _Replica] = {}
        self._closed = False

    async def start_replica(
        self, key: str, spec: ProcessSpec, policy: RestartPolicy = _DEFAULT_POLICY
    ) -> ReplicaProcess:
        """Spawn ``spec`` under ``key`` and supervise it; returns once the process exists.

        :raises ValueError: ``key`` is already supervised (stop it first; a ``"failed"`` one too).
        :raises OSError: the first spawn failed (e.g. no such executable); nothing is kept.
        :raises RuntimeError: the supervisor is closed.
        """
        if self._closed:
            raise RuntimeError("supervisor is closed")
        if key in self._replicas:
            raise ValueError(f"replica {key!r} is already supervised")
        rep = _Replica(key, spec, policy)
        self._replicas[key] = rep
        rep.task = asyncio.create_task(self._supervise(rep), name=f"supervise {key}")
        await asyncio.shield(rep.first_spawn)
        return rep.view

    async def stop_replica(self, key: str, grace: float | None = None) -> int | None:
        """Stop ``key`` for good: SIGTERM its process group, SIGKILL after ``grace`` seconds.

        Cancels a pending restart. Returns the exit code of the last process (``-9`` if it had to
        be killed, ``None`` if none ever ran) and forgets the replica. A concurrent second call
        waits for the first one.

        :raises KeyError: no replica has this key.
        """
        rep = self._replicas[key]
        if not rep.stop.is_set():
            rep.grace = self._stop_grace if grace is None else grace
            rep.stop.set()
        assert rep.task is not None
        try:
            return await asyncio.shield(rep.task)
        finally:
            if rep.task.done() and self._replicas.get(key) is rep:
                del self._replicas[key]

    def kill(self, key: str) -> bool:
        """SIGKILL the replica's process (and its group) without stopping the replica: it is
        restarted as after a crash. For a process that no longer answers anything. False when
        no process of it runs."""
        rep = self._replicas.get(key)
        proc = None if rep is None else rep.proc
        if proc is None or proc.returncode is not None:
            return False
        return kill_group(proc.pid, signal.SIGKILL)

    def stopped(self, key: str) -> bool | None:
        """Whether the replica's process is stopped (a SIGSTOP, a debugger holding it). None
        when no process of it runs or the system does not say (Linux only)."""
        rep = self._replicas.get(key)
        proc = None if rep is None else rep.proc
        if proc is None or proc.returncode is not None:
            return None
        return is_stopped(proc.pid)

    async def ask(self, key: str, sig: int, *, quiet: float = 0.2, within: float = 2.0) -> bool:
        """Send ``sig`` to the replica's process (its leader alone, not its group) for something
        it prints in answer, and wait for that to come through ``output``: until it printed and
        then went quiet for ``quiet`` seconds, ``within`` seconds at most. False when no process
        of it runs or nothing came."""
        rep = self._replicas.get(key)
        proc = None if rep is None else rep.proc
        if proc is None or proc.returncode is not None:
            return False
        return await proc.answer(sig, quiet=quiet, within=within)

    def replicas(self) -> dict[str, ReplicaProcess]:
        """The supervised replicas by key (live views), including ``"failed"`` ones."""
        return {key: rep.view for key, rep in self._replicas.items()}

    async def close(self, grace: float | None = None) -> None:
        """Stop every replica in parallel and refuse new ones; no child process is left behind."""
        self._closed = True
        keys = list(self._replicas)
        results = await asyncio.gather(
            *(self.stop_replica(key, grace) for key in keys), return_exceptions=True
        )
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, KeyError):
                log.error("stopping replica %s failed", key, exc_info=result)

    # -- one task per replica --------------------------------------------------------------

    async def _supervise(self, rep: _Replica) -> int | None:
        policy = rep.policy
        consecutive = 0
        code: int | None = None
        try:
            try:
                await self._spawn(rep)
            except BaseException as exc:
                del self._replicas[rep.key]
                rep.view.state = "failed"
                if isinstance(exc, Exception):
                    rep.first_spawn.set_exception(exc)
                    return None
                rep.first_spawn.cancel()
                raise
            rep.first_spawn.set_result(None)
            while True:
                if rep.proc is not None:
                    if await self._exited_or_stop(rep):
                        return await self._terminate(rep)
                    code = rep.proc.returncode
                    declared = rep.proc.declared()
                    await self._reap(rep)
                    rep.view.last_exit_code, rep.view.last_exit_declared = code, declared
                    self._emit("exited", rep, exit_code=code)
                else:
                    code = None  # the respawn itself failed (said as spawn_failed)
                rep.view.state = "backoff"
                replaced = rep.view.last_exit_declared and code == EXIT_REPLACE
                if time.monotonic() - rep.spawned_at >= policy.reset_after or replaced:
                    consecutive = 0  # ran long enough, or asked for a fresh process: not a crash
                if policy.max_restarts is not None and consecutive >= policy.max_restarts:
                    rep.view.state = "failed"
                    self._emit("gave_up", rep, exit_code=code)
                    return code
                consecutive += 1
                delay = policy.backoff(consecutive)
                self._emit("restarting", rep, exit_code=code, backoff=delay)
                if await self._stop_requested_within(rep, delay) or await self._stopped_before_restart(rep):
                    rep.view.state = "stopped"
                    self._emit("stopped", rep, exit_code=code)
                    return code
                rep.view.restarts += 1
                try:
                    await self._spawn(rep)
                except Exception as exc:
                    error = _spawn_error(exc)
                    log.error("could not start replica %s again: %s", rep.spec.name, error)
                    self._emit("spawn_failed", rep, error=error)
        finally:
            # Reached with an unreaped process only if this task was cancelled or hit a bug.
            proc = rep.proc
            if proc is not None:
                if proc.returncode is None:
                    kill_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
                await self._reap(rep)

    async def _spawn(self, rep: _Replica) -> None:
        rep.view.state = "starting"
        rep.spawned_at = time.monotonic()
        rep.last_pid = None
        proc = take(rep.spec, self._output)  # an interpreter started ahead, its imports done
        if proc is None:
            try:
                proc = await spawn(rep.spec, output=self._output)
            except BaseException:
                rep.view.state = "backoff"
                raise
        rep.proc = proc
        rep.last_pid = proc.pid
        rep.view.pid = proc.pid
        rep.view.started_at = time.time()
        rep.view.state = "running"
        log.info("replica %s started (pid %d)", rep.spec.name, proc.pid)
        self._emit("started", rep)

    async def _exited_or_stop(self, rep: _Replica) -> bool:
        """Wait until the process exits or a stop is requested; True for a stop."""
        assert rep.proc is not None
        await self._unless_stopped(rep, rep.proc.wait())
        return rep.stop.is_set()

    async def _stopped_before_restart(self, rep: _Replica) -> bool:
        """Await ``before_restart``; True if a stop was requested first."""
        if self._before_restart is None:
            return False
        error = await self._unless_stopped(rep, self._before_restart())
        if error is not None:
            log.error("before restarting replica %s: %s", rep.spec.name, error)
        return rep.stop.is_set()

    async def _unless_stopped(self, rep: _Replica, work: Awaitable[object]) -> Exception | None:
        """Await ``work`` until it ends or a stop of ``rep`` is requested (then it is cancelled);
        return the exception ``work`` raised, if any."""
        waits = [asyncio.ensure_future(work), asyncio.ensure_future(rep.stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
            results = await asyncio.gather(*waits, return_exceptions=True)
        return results[0] if isinstance(results[0], Exception) else None

    async def _stop_requested_within(self, rep: _Replica, delay: float) -> bool:
        try:
            async with asyncio.timeout(delay):
                await rep.stop.wait()
        except TimeoutError:
            return False
        return True

    async def _terminate(self, rep: _Replica) -> int | None:
        proc = rep.proc
        assert proc is not None
        rep.view.state = "stopping"
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGTERM)
            # A stopped process (a SIGSTOP, a Ctrl-Z that reached it) keeps the SIGTERM pending
            # until it runs again: wake it, so that it stops in order instead of being killed.
            kill_group(proc.pid, signal.SIGCONT)
            try:
                async with asyncio.timeout(rep.grace):
                    await proc.wait()
            except TimeoutError:
                log.warning(
                    "replica %s did not stop within %.1fs of its SIGTERM: killing it%s",
                    rep.spec.name,
                    rep.grace,
                    "; where it is, as it says:" if self._last_words is not None and self._output else "",
                )
                if self._last_words is not None:
                    await proc.answer(self._last_words, quiet=0.2, within=1.0)
                kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        code = proc.returncode
        declared = proc.declared()
        await self._reap(rep)
        rep.view.last_exit_code, rep.view.last_exit_declared = code, declared
        rep.view.state = "stopped"
        self._emit("stopped", rep, exit_code=code)
        return code

    async def _reap(self, rep: _Replica) -> None:
        """After the leader exited: kill what is left of its group, finish reading its output."""
        proc = rep.proc
        assert proc is not None
        # The leader is already reaped, but its pid stays reserved while any group member lives,
        # so this cannot hit a recycled pid unless the group is already empty (a tiny window).
        kill_group(proc.pid, signal.SIGKILL)
        forget_group(proc.pid)
        await proc.close(self._output_drain)
        rep.proc = None
        rep.view.pid = None

    def _emit(
        self,
        kind: EventKind,
        rep: _Replica,
        *,
        exit_code: int | None = None,
        backoff: float | None = None,
        error: str | None = None,
    ) -> None:
        event = SupervisorEvent(
            kind=kind,
            key=rep.key,
            name=rep.spec.name,
            pid=rep.last_pid,
            exit_code=exit_code,
            restarts=rep.view.restarts,
            backoff=backoff,
            at=time.time(),
            error=error,
            declared=exit_code is not None and rep.view.last_exit_declared,
        )
        if event.replacing and kind == "exited":
            log.info("replica %s asked to be replaced: starting a fresh one", rep.spec.name)
        elif kind == "gave_up" or (kind == "exited" and self._on_event is None):
            log.warning(
                "replica %s %s (exit code %s, %d restarts)", rep.spec.name, kind, exit_code, rep.view.restarts
            )
        elif kind == "exited":  # the owner says it, in its words (see on_event)
            log.info(
                "replica %s exited (exit code %s, %d restarts)", rep.spec.name, exit_code, rep.view.restarts
            )
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("supervisor event callback failed on %s", event)


def _spawn_error(exc: Exception) -> str:
    """``its program is missing: /path`` rather than ``[Errno 2] ...: '/path'``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"
