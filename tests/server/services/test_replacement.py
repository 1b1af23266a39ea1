"""ReplaceCheck: a worker's memory over its service's max-memory, read as it is now."""

from __future__ import annotations

import pytest

from llamactl.server.services.replacement import ReplaceCheck, resident_bytes
from llamactl.server.services.spec import WorkerSpec


def _spec(max_memory: int | None) -> WorkerSpec:
    return WorkerSpec(
        deployment="d",
        service_id="s",
        replica_id="s#1",
        source_dir="/",
        import_path="m:f",
        mq={},
        max_memory=max_memory,
    )


def test_resident_bytes_follows_what_the_process_holds() -> None:
    before = resident_bytes()
    assert before is not None and before > 10 << 20
    held = b"x" * (64 << 20)
    during = resident_bytes()
    assert during is not None and during - before > 48 << 20
    del held
    after = resident_bytes()
    assert after is not None and during - after > 48 << 20  # the current figure, not the peak


def _ran_a_task(check: ReplaceCheck) -> ReplaceCheck:
    check.task_ended()
    return check


def test_a_worker_over_its_max_memory_after_a_task_should_be_replaced() -> None:
    held = resident_bytes()
    assert held is not None
    assert _ran_a_task(ReplaceCheck(_spec(None))).reason() is None
    assert _ran_a_task(ReplaceCheck(_spec(held * 2))).reason() is None
    reason = _ran_a_task(ReplaceCheck(_spec(held // 2))).reason()
    assert reason is not None and "of memory, over its service's max-memory of" in reason


def test_a_worker_over_its_max_memory_with_only_its_code_loaded_says_so_and_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fresh worker would hold as much: replacing it before any task would replace it for
    ever, running none."""
    held = resident_bytes()
    assert held is not None
    check = ReplaceCheck(_spec(held // 2))
    assert "with its code loaded, over its service's max-memory" in caplog.text
    assert check.reason() is None
    assert _ran_a_task(check).reason() is not None
