from __future__ import annotations

import pytest

from llamactl.server.errors import InvalidRequest, ServiceNotFound
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.types import TaskRecord, TaskStatus


def _task(task_id: str, status: TaskStatus = TaskStatus.QUEUED) -> TaskRecord:
    return TaskRecord(task_id=task_id, deployment="d", service_id="s", session_id="x", status=status)


def test_a_named_service_is_routed_to_its_work_topic() -> None:
    route = Orchestrator("d", ["a", "b"], "a").route("b")
    assert (route.service_id, route.topic) == ("b", "work.d.svc.b")


def test_no_service_means_the_default_service() -> None:
    assert Orchestrator("d", ["a", "b"], "b").route(None).service_id == "b"


def test_an_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(ServiceNotFound, match="known services are a, b"):
        Orchestrator("d", ["a", "b"], "a").route("c")


def test_no_service_and_no_default_says_which_to_pass() -> None:
    with pytest.raises(InvalidRequest, match="pass one of a, b"):
        Orchestrator("d", ["a", "b"], None).route(None)


def test_the_next_task_of_a_session_waits_for_the_handed_out_one() -> None:
    tasks = [_task("1", TaskStatus.RUNNING), _task("2")]
    assert Orchestrator.next_in_session(tasks, dispatched={"1"}) is None


def test_finished_tasks_let_the_oldest_queued_one_go() -> None:
    tasks = [_task("1", TaskStatus.COMPLETED), _task("2", TaskStatus.FAILED), _task("3"), _task("4")]
    chosen = Orchestrator.next_in_session(tasks, dispatched={"1", "2"})
    assert chosen is not None and chosen.task_id == "3"
