"""Python 3.11's Protocol checks with each protocol's members remembered per class (as 3.12 does)."""

from __future__ import annotations

import collections
import gc
import sys
import typing
from typing import Any, Protocol, runtime_checkable

import pytest

from llamactl.server.services import protocol_members
from llamactl.server.services.protocol_members import RememberedMembers

from .test_execution import run

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 remembers them itself")


@runtime_checkable
class _Storage(Protocol):
    name: str

    def load(self) -> bytes: ...


class _Full:
    name = "full"

    def load(self) -> bytes:
        return b""


class _Blocked(_Full):
    load = None  # type: ignore[assignment]  # a method set to None blocks it


class _Half:
    def load(self) -> bytes:
        return b""


def _real() -> Any:
    current = typing._get_protocol_attrs  # type: ignore[attr-defined]
    return current.work_out if isinstance(current, RememberedMembers) else current


def _counting(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """From now on, each time a protocol's members are worked out is counted by its name."""
    real, counts = _real(), collections.Counter[str]()

    def work_out(cls: type) -> Any:
        counts[cls.__qualname__] += 1
        return real(cls)

    monkeypatch.setattr(typing, "_get_protocol_attrs", work_out)
    return counts


def test_a_protocol_s_members_are_worked_out_once_and_checks_answer_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = _counting(monkeypatch)
    objects = [_Full(), _Blocked(), _Half(), object(), "text"]
    before = [isinstance(o, _Storage) for o in objects]
    assert before == [True, False, False, False, False]
    assert counts["_Storage"] >= len(objects)  # the plain check works them out every time
    installed = protocol_members.install()
    assert isinstance(installed, RememberedMembers) and protocol_members.install() is installed
    counts.clear()
    assert [isinstance(o, _Storage) for o in objects * 3] == before * 3
    assert counts == {"_Storage": 1}


def test_a_class_that_goes_takes_its_entry_along() -> None:
    remembered = RememberedMembers(_real())
    for n in range(50):
        made = runtime_checkable(type(f"P{n}", (Protocol,), {"__annotations__": {"x": int}}))
        assert set(remembered(made)) == {"x"}
    del made
    gc.collect()
    assert len(remembered._known) <= 1


async def test_a_workflow_s_runs_work_a_protocol_s_members_out_once(
    monkeypatch: pytest.MonkeyPatch, load: Any
) -> None:
    """workflows 2.x checks each run's state store against a runtime-checkable Protocol."""
    counts = _counting(monkeypatch)
    runnable = load("flows:counter")  # prepared for its runs here, as a worker prepares it
    context = None
    for n in (1, 2, 3):
        outcome = await run(runnable, context=context)
        assert outcome.result["count"] == n
        context = outcome.context
    assert max(counts.values(), default=0) <= 1, counts
