"""Whether a server the deployment depends on (its Redis queue, its PostgreSQL store) answers.

A client of such a server keeps one :class:`Reachability`: the first call that cannot reach it
(or that it refuses for now: a Redis out of memory, a PostgreSQL with a full disk) begins an
:class:`Outage` (logged once), the next call answered ends it (logged once). The outage is what
``GET /status/``, ``/state`` health and ``/metrics`` report, and what the server reads to not
take a silence the outage explains for a failure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RECUR_WINDOW", "STATE_REFUSING_WRITES", "STATE_UNREACHABLE", "Outage", "Reachability"]

RECUR_WINDOW = 60.0
"""Seconds within which an outage that begins again soon after the last one ended is said at most
once (a disk that frees a page now and then: each write that fits ends the outage, the next one
that does not begins another)."""

STATE_UNREACHABLE = "unreachable"
"""An outage's state: the server does not answer."""
STATE_REFUSING_WRITES = "refusing writes"
"""An outage's state: the server answers reads but cannot take a write for now (its memory or
its disk is full, it is a read-only replica); a read answered does not end it."""


@dataclass(frozen=True, slots=True)
class Outage:
    """A server that this process cannot reach right now."""

    what: str
    """What the server is to the deployment: "message queue", "state store"."""
    where: str
    """The server, as it may be shown (no password)."""
    since: float
    """When the first call failed (``time.time()``)."""
    error: str
    """What the latest failed call said."""
    state: str = STATE_UNREACHABLE
    """What is wrong: :data:`STATE_UNREACHABLE`, :data:`STATE_REFUSING_WRITES`, or another
    condition of the server that stops its calls for now (``refusing connections``)."""

    def describe(self, now: float | None = None) -> str:
        """One line for a person: which server, for how long, and what it said."""
        lasted = max(0.0, (time.time() if now is None else now) - self.since)
        return f"{self.what} {self.where} {self.state} for {lasted:.0f}s ({self.error})"


class Reachability:
    """The outage of one server, as its client's calls find it."""

    def __init__(
        self, what: str, where: str, log: logging.Logger, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.what = what
        self.where = where
        self._log = log
        self._clock = clock
        self.outage: Outage | None = None
        """Set by the first call that found the server unreachable, cleared by the next answered."""
        self.outages = 0
        """Outages begun so far (one too short to be seen in ``outage`` counts too)."""
        self._ended_at = -math.inf
        self._said_at = -math.inf
        """When an outage's beginning was last said."""
        self._unsaid = 0
        """Outages begun since then that were not said (each recurred within RECUR_WINDOW)."""
        self._said = False
        """Whether the outage on now was said (so its end is said too)."""

    def unreachable(self, error: str, *, quiet: bool = False, state: str = STATE_UNREACHABLE) -> None:
        """A call found the server unreachable (or in another ``state`` that stops it for now): an
        outage begins (said once unless ``quiet``: the caller says it its own way; one that begins
        again within RECUR_WINDOW of the last one's end, at most once per RECUR_WINDOW), or the
        one on now has this latest error and state."""
        if self.outage is None:
            now = self._clock()
            self.outages += 1
            self.outage = Outage(self.what, self.where, now, error, state)
            recurs = now - self._ended_at < RECUR_WINDOW
            self._said = not recurs or now - self._said_at >= RECUR_WINDOW
            if not self._said:
                self._unsaid += 1
                self._log.debug("%s %s %s again (%s)", self.what, self.where, state, error)
                return
            unsaid, since, self._unsaid, self._said_at = self._unsaid, now - self._said_at, 0, now
            if quiet:
                return
            again = " again" if recurs else ""
            self._log.warning("%s %s %s%s (%s); retrying", self.what, self.where, state, again, error)
            if unsaid:
                self._log.warning(
                    "%s %s: %d more outage(s) began and ended in the last %.0fs, not said one by one "
                    "(at most one line a minute while it comes and goes)",
                    self.what, self.where, unsaid, since,
                )  # fmt: skip
        elif (error, state) != (self.outage.error, self.outage.state):
            # the latest says most (a refused connection: it is down)
            self.outage = dataclasses.replace(self.outage, error=error, state=state)

    def answered(self, *, wrote: bool = True) -> None:
        """A call was answered: an outage, if one was on, is over (said once, when its beginning
        was). A read answered (``wrote=False``) does not end one of a server that refuses writes."""
        outage = self.outage
        if outage is None or (not wrote and outage.state == STATE_REFUSING_WRITES):
            return
        now = self._clock()
        lasted = now - outage.since
        if self._said:
            self._log.warning(
                "%s %s answers again (%s for %.0fs)", self.what, self.where, outage.state, lasted
            )
        else:
            self._log.debug("%s %s answers again (%s for %.0fs)", self.what, self.where, outage.state, lasted)
        self._ended_at = now
        self.outage = None
