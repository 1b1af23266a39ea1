"""StoredTask's public view and copies: what pydantic's own model_construct and model_copy give."""

from __future__ import annotations

import pytest

from llamactl.server.control_plane.stored import StoredTask, changed_index
from llamactl.server.state.base import Index
from llamactl.server.types import TaskRecord, TaskStatus


def _task(**fields: object) -> StoredTask:
    values: dict[str, object] = {
        "task_id": "t1",
        "deployment": "d",
        "service_id": "echo",
        "session_id": "s1",
        "input": '{"message": "hi"}',
        "status": TaskStatus.COMPLETED,
        "result": {"nested": [1, 2]},
        "created_at": 12.5,
        "own_session": True,
        **fields,
    }
    return StoredTask.model_validate(values)


@pytest.mark.parametrize("fields", [{}, {"error": "ValueError: no", "replica_id": "r1", "attempts": 3}])
def test_public_is_the_task_record_part(fields: dict[str, object]) -> None:
    task = _task(**fields)
    public = task.public()
    expected = TaskRecord.model_construct(**{name: getattr(task, name) for name in TaskRecord.model_fields})
    assert type(public) is TaskRecord
    assert public == expected
    assert public.model_dump_json() == expected.model_dump_json()
    assert public.model_dump() == TaskRecord.model_validate(public.model_dump()).model_dump()
    assert "dispatched" not in public.model_dump() and public.own_session is True
    assert public.model_fields_set <= set(TaskRecord.model_fields)


def test_public_is_not_changed_by_later_changes_of_the_task() -> None:
    task = _task()
    public = task.public()
    task.status = TaskStatus.FAILED
    assert public.status is TaskStatus.COMPLETED


def test_clone_is_a_shallow_copy_like_model_copy() -> None:
    task = _task(dispatched=True)
    clone = task.clone()
    assert type(clone) is StoredTask
    assert clone == task.model_copy()
    assert clone.model_fields_set == task.model_fields_set
    clone.status = TaskStatus.RUNNING
    clone.attempts = 7
    assert (task.status, task.attempts) == (TaskStatus.COMPLETED, 0)
    assert clone.result is task.result  # shallow, as model_copy(): fields are assigned, not mutated
    assert clone.model_dump_json() != task.model_dump_json()
    assert StoredTask.model_validate_json(clone.model_dump_json()) == clone


def test_changed_index_names_only_the_moved_fields_and_never_the_sort() -> None:
    before = _task(status=TaskStatus.RUNNING, own_session=False)
    after = before.clone()
    after.attempts = 2
    assert changed_index(before, after) is None
    after.status = TaskStatus.COMPLETED
    assert changed_index(before, after) == Index(sort=None, fields={"svc_status": "echo/completed"})
    assert before.index() == Index(sort=before.sort, fields={"svc_status": "echo/running", "session": "s1"})
    own = _task(status=TaskStatus.RUNNING)
    assert own.index().fields == {"svc_status": "echo/running"}  # its own session is not indexed
