"""A service's module named like our own package (``llamactl.py``) must not put our modules out
of the worker: they are imported from it while it loads and runs tasks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl.server.errors import WorkflowLoadError
from llamactl.server.services.adapters import adapt
from llamactl.server.services.loader import load_target

from .conftest import WriteModule

FLOW = """
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent


class Echo(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="echo")


flow = Echo(timeout=None)
"""


@pytest.fixture
def _modules_restored() -> Iterator[None]:
    """Put back every module a failing load takes out (the conftest only drops new ones)."""
    before = dict(sys.modules)
    yield
    for name, module in before.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module


@pytest.mark.usefixtures("_modules_restored")
def test_a_module_named_like_our_package_is_refused_and_ours_stay(
    source_dir: Path, write_module: WriteModule
) -> None:
    import llamactl.server.services.workflow_runs as ours  # noqa: PLC0415

    write_module("llamactl.py", FLOW)
    with pytest.raises(WorkflowLoadError, match=r"rename .*llamactl\.py"):
        adapt(load_target(source_dir, "llamactl:flow"), label="llamactl:flow")
    assert sys.modules["llamactl.server.services.workflow_runs"] is ours
    assert Path(sys.modules["llamactl"].__file__ or "").resolve() != (source_dir / "llamactl.py").resolve()
