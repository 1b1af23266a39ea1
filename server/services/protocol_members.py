"""A runtime-checkable Protocol's members worked out once per class, as Python 3.12 does, on 3.11.

Python 3.11's ``isinstance(obj, SomeProtocol)`` walks the protocol's classes for its member names
on every check, twice (``typing._get_protocol_attrs``); 3.12 does it once, when the class is made
(``__protocol_attrs__``). The ``workflows`` library (2.x) checks its state store against a
``runtime_checkable`` Protocol on every run: 16 us of a ~540 us echo run timed alone, ~3.5 % of
a run's CPU in alternating rounds of runs in one process (bench/README.md, point 44). :func:`install` gives
3.11 the later behaviour in the process it runs in: the names are remembered per class (weakly:
a class that goes takes its entry along). What an ``isinstance`` answers is unchanged, as long
as nobody adds members to a Protocol class after making it, which 3.12 does not see either. On
3.12 and later it does nothing.
"""

from __future__ import annotations

import sys
import typing
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["RememberedMembers", "install"]


class RememberedMembers:
    """``typing._get_protocol_attrs`` remembered per class."""

    def __init__(self, work_out: Callable[[type], Any]) -> None:
        self.work_out = work_out
        """The function that works the names out (the real ``typing._get_protocol_attrs``)."""
        self._known: weakref.WeakKeyDictionary[type, Any] = weakref.WeakKeyDictionary()

    def __call__(self, cls: type) -> Any:
        found = self._known.get(cls)
        if found is None:
            found = self._known[cls] = self.work_out(cls)
        return found


def install() -> RememberedMembers | None:
    """On Python 3.11, make this process's Protocol checks remember each protocol's members (once
    per process: a later call finds it done); return what checks use now, None on 3.12 and later."""
    if sys.version_info >= (3, 12):
        return None
    current = typing._get_protocol_attrs  # type: ignore[attr-defined]
    if isinstance(current, RememberedMembers):
        return current
    remembered = RememberedMembers(current)
    typing._get_protocol_attrs = remembered  # type: ignore[attr-defined]
    return remembered
