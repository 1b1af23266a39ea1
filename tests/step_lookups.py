"""Counting the ``workflows`` library's lookups of a workflow's steps (``inspect.getmembers`` each
time), which llamactl's workers and the benchmark's floor make once per workflow, not per run."""

from __future__ import annotations

from typing import Any

import pytest
import workflows.workflow


def count_step_lookups(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, each lookup of an instance's steps is appended to the list returned."""
    lookups: list[object] = []
    real = workflows.workflow.get_steps_from_instance

    def counted(instance: object) -> Any:
        lookups.append(instance)
        return real(instance)

    monkeypatch.setattr(workflows.workflow, "get_steps_from_instance", counted)
    return lookups
