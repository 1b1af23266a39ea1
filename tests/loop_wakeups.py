"""Counting the wake-ups of the running asyncio event loop: what an idle component costs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


class LoopWakeups:
    """Counts the times the running loop went to sleep waiting for I/O or a timer, from creation
    on: one per wake-up (a turn that had callbacks ready does not wait, and is not counted);
    :meth:`reset` starts again from 0."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        original = selector.select

        def counted(timeout: float | None = None) -> Any:
            if timeout is None or timeout > 0:
                self.count += 1
            return original(timeout)

        monkeypatch.setattr(selector, "select", counted)

    def reset(self) -> None:
        self.count = 0
