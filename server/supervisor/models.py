"""The supervisor's value types: what to run, how to restart it, and what it reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "EXIT_LOAD_ERROR",
    "EXIT_REPLACE",
    "EventKind",
    "ProcessSpec",
    "ReplicaProcess",
    "ReplicaState",
    "RestartPolicy",
    "SupervisorEvent",
]

EXIT_LOAD_ERROR = 3
"""Exit code of a worker that could not load its code. Restarted like a crash, flagged in events.
Like :data:`EXIT_REPLACE`, it counts only when the process declared it (see :mod:`.exit_note`):
the service's own code may exit with any code."""
EXIT_REPLACE = 6
"""Exit code of a worker that asked to be replaced (it held what only its end frees: see
``services/replacement.py``). Restarted at once, not counted as a crash, flagged in events."""

ReplicaState = Literal["starting", "running", "backoff", "stopping", "stopped", "failed"]
EventKind = Literal["started", "exited", "spawn_failed", "restarting", "gave_up", "stopped"]


@dataclass(frozen=True)
class ProcessSpec:
    """The command of one replica.

    ``env`` is laid over ``os.environ`` (a worker gets its ``LLAMACTL_WORKER_SPEC`` here).
    """

    name: str
    """Shown in logs and passed to the output callback, e.g. ``"echo#1"``."""
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    hidden_env: frozenset[str] = frozenset()
    """Variables of our own environment the child must not see (secrets)."""


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff for replicas that exit without being asked to.

    The n-th consecutive restart waits ``min(initial_backoff * multiplier ** (n - 1), max_backoff)``.
    A replica that ran at least ``reset_after`` seconds counts as healthy: the backoff and the
    consecutive-restart count start over. ``max_restarts`` bounds the consecutive restarts
    (``None``: restart forever); once reached, the replica is ``"failed"`` and a ``gave_up`` event
    is sent.
    """

    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0
    reset_after: float = 10.0
    max_restarts: int | None = None

    def backoff(self, attempt: int) -> float:
        """Delay before the ``attempt``-th consecutive restart (1-based)."""
        return min(self.initial_backoff * self.multiplier ** max(attempt - 1, 0), self.max_backoff)


@dataclass
class ReplicaProcess:
    """Live view of one supervised replica; the supervisor updates it in place, do not mutate it."""

    key: str
    name: str
    pid: int | None = None
    """OS pid while a process is running (also its process group id), else ``None``."""
    restarts: int = 0
    """Restarts over the replica's whole life (not reset by a healthy run)."""
    last_exit_code: int | None = None
    """Last exit status; negative ``-N`` when killed by signal ``N`` (asyncio's convention)."""
    last_exit_declared: bool = False
    """The process declared that code before exiting with it (see :mod:`.exit_note`)."""
    state: ReplicaState = "starting"
    started_at: float | None = None
    """``time.time()`` of the last spawn."""

    @property
    def load_error(self) -> bool:
        """The last exit was a worker that could not load its code."""
        return self.last_exit_declared and self.last_exit_code == EXIT_LOAD_ERROR


@dataclass(frozen=True)
class SupervisorEvent:
    """Something happened to a replica.

    * ``started``: a process was spawned (``pid``; ``restarts`` so far).
    * ``exited``: it exited without being asked to (``exit_code``).
    * ``spawn_failed``: starting it again failed (``error``: its program is missing, say).
    * ``restarting``: it will be spawned again after ``backoff`` seconds.
    * ``gave_up``: ``max_restarts`` reached; the replica stays ``"failed"``.
    * ``stopped``: :meth:`Supervisor.stop_replica` finished (``exit_code`` of the stopped process).
    """

    kind: EventKind
    key: str
    name: str
    pid: int | None
    exit_code: int | None
    restarts: int
    backoff: float | None
    at: float
    """``time.time()`` when the event happened."""
    error: str | None = None
    """Why a ``spawn_failed`` respawn failed."""
    declared: bool = False
    """The process declared ``exit_code`` before exiting with it (see :mod:`.exit_note`); an exit
    code of the service's own code (``sys.exit(3)`` in a task) is not."""

    @property
    def load_error(self) -> bool:
        """The exit was a worker that could not load its code (exit code 3, declared)."""
        return self.declared and self.exit_code == EXIT_LOAD_ERROR

    @property
    def replacing(self) -> bool:
        """The exit was a worker that asked to be replaced (exit code 6, declared)."""
        return self.declared and self.exit_code == EXIT_REPLACE

    def restart_line(self) -> str:
        """For a ``restarting`` event: ``<name> exited with code <n> (why), restarting in <s> s``,
        as ``llamactl serve`` shows it (one row: ``restarting``)."""
        if self.exit_code is None:
            return f"{self.name} could not start, trying again in {self.backoff or 0.0:.1f} s"
        why = (
            " (its code does not load)"
            if self.load_error
            else " (it asked for a fresh process: its log says why)"
            if self.replacing
            else ""
        )
        return (
            f"{self.name} exited with code {self.exit_code}{why}, restarting in {self.backoff or 0.0:.1f} s"
        )
