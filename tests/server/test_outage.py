"""What a Reachability says as outages come and go: each said once when it begins and when it
ends, and one that keeps coming back (a disk that frees a page now and then) at most once a
minute, with how many went unsaid; the outage itself is always current."""

from __future__ import annotations

import logging

import pytest

from llamactl.server.outage import RECUR_WINDOW, STATE_REFUSING_WRITES, Reachability


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    return lines


def test_an_outage_that_keeps_coming_back_is_said_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    reach = Reachability("state store", "postgresql://db/x", logging.getLogger("test.outage"), clock=clock)
    caplog.set_level(logging.DEBUG, "test.outage")

    def flap(at: float, lasting: float = 1.0) -> None:
        clock.now = at
        reach.unreachable("its disk is full", state=STATE_REFUSING_WRITES)
        assert reach.outage is not None and reach.outage.since == at  # always current
        clock.now = at + lasting
        reach.answered()
        assert reach.outage is None

    flap(1000.0)
    assert said(caplog) == [
        "state store postgresql://db/x refusing writes (its disk is full); retrying",
        "state store postgresql://db/x answers again (refusing writes for 1s)",
    ]
    for at in (1005.0, 1010.0, 1030.0):  # a write that fits now and then ends it
        flap(at)
    assert said(caplog) == []
    assert reach.outages == 4
    flap(1000.0 + RECUR_WINDOW + 5)
    assert said(caplog) == [
        "state store postgresql://db/x refusing writes again (its disk is full); retrying",
        "state store postgresql://db/x: 3 more outage(s) began and ended in the last 65s, not said one by "
        "one (at most one line a minute while it comes and goes)",
        "state store postgresql://db/x answers again (refusing writes for 1s)",
    ]
    flap(1070.0)  # within a minute of the last said: not said
    assert said(caplog) == []
    flap(1071.0 + RECUR_WINDOW + 1)  # a minute after the last ended: a new outage, said as such
    assert said(caplog) == [
        "state store postgresql://db/x refusing writes (its disk is full); retrying",
        "state store postgresql://db/x: 1 more outage(s) began and ended in the last 67s, not said one by one "
        "(at most one line a minute while it comes and goes)",
        "state store postgresql://db/x answers again (refusing writes for 1s)",
    ]
