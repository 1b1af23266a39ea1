"""The Worker loop and run_worker over an in-memory queue: what is published, acked, extended, drained."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.mq import topics
from llamactl.server.protocol import (
    TaskInput,
    TaskInputKind,
    TaskMessage,
    TaskResume,
    WorkerMessage,
    WorkerMessageKind,
    event_msg_id,
    final_msg_id,
)
from llamactl.server.services.adapters import adapt
from llamactl.server.services.loader import load_target
from llamactl.server.services.process import EXIT_LOAD_FAILED, run_worker
from llamactl.server.services.spec import WorkerSpec
from llamactl.server.services.worker import Worker

from .conftest import WriteModule
from .fake_mq import FakeQueue
from .harness import TAKES_RUN_ID
from .usercode import FLOWS, FUNCS

K = WorkerMessageKind
GATED = """
import asyncio

gate = asyncio.Event()


async def wait_gate(n: int) -> int:
    await gate.wait()
    return n
"""


@pytest.fixture
def spec(source_dir: Path, write_module: WriteModule) -> WorkerSpec:
    write_module("flows.py", FLOWS)
    write_module("funcs.py", FUNCS)
    write_module("gated.py", GATED)
    return WorkerSpec(
        deployment="dep",
        service_id="svc",
        replica_id="svc-1",
        source_dir=str(source_dir),
        import_path="flows:counter",
        max_concurrency=2,
        lease=30.0,
        heartbeat_interval=3600.0,
        mq={},
    )


CONTROL = topics.control_topic("dep")
SERVICE = topics.service_topic("dep", "svc")


def control(queue: FakeQueue) -> list[WorkerMessage]:
    return [WorkerMessage.model_validate_json(m.payload) for m in queue.topics.get(CONTROL, [])]


def kinds(queue: FakeQueue, task_id: str | None = None) -> list[str]:
    return [m.kind.value for m in control(queue) if task_id is None or m.task_id == task_id]


def streamed(reports: list[WorkerMessage]) -> list[tuple[int, Any]]:
    """``(index, value)`` of every event the task.event reports carry, one or several each."""
    out = []
    for m in reports:
        if m.kind is K.TASK_EVENT:
            assert m.event_index is not None
            events = [m.event] if m.event is not None else m.events
            out += [(m.event_index + i, event["value"]) for i, event in enumerate(events)]
    return out


def finished(queue: FakeQueue, task_id: str) -> bool:
    return any(
        m.task_id == task_id and m.kind in (K.TASK_COMPLETED, K.TASK_FAILED, K.TASK_CANCELLED)
        for m in control(queue)
    )


async def submit(queue: FakeQueue, task_id: str, **fields: Any) -> None:
    task = TaskMessage(task_id=task_id, session_id="s1", service_id="svc", deployment="dep", **fields)
    await queue.publish(SERVICE, task.model_dump_json().encode(), msg_id=f"{task_id}:start", key="s1")


@pytest.fixture
async def serving(spec: WorkerSpec) -> AsyncIterator[Any]:
    """Start a Worker for a target (``serve(path, **spec_changes)``); stop it at the end."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def serve(path: str, **changes: Any) -> tuple[Worker, FakeQueue]:
        the_spec = spec.model_copy(update={"import_path": path, **changes})
        queue = FakeQueue()
        runnable = adapt(load_target(Path(the_spec.source_dir), path))
        worker = Worker(the_spec, queue, runnable)
        started.append((worker, asyncio.create_task(worker.serve())))
        return worker, queue

    yield serve
    for worker, task in started:
        worker.abort()
        await task


async def test_a_task_runs_and_reports_in_order(serving: Any) -> None:
    _, queue = serving("flows:counter")
    await submit(queue, "t1", input={"who": "ada"})
    await queue.wait_for(lambda: finished(queue, "t1"))
    await queue.wait_for(lambda: queue.deliveries[0].state == "acked")
    assert queue.consumers == [{"topic": SERVICE, "prefetch": 2, "lease": 30.0}]
    # The first event reports the start; the StopEvent rides with the final report. Events that
    # come while one is on its way (this queue takes one at a time) leave together, in one report.
    reports = control(queue)
    assert reports[0].kind is K.TASK_STARTED and reports[-1].kind is K.TASK_COMPLETED
    assert {m.kind for m in reports[1:-1]} == {K.TASK_EVENT}
    msgs = queue.topics[CONTROL]
    firsts = [m.event_index for m in reports[1:-1]]
    assert [m.msg_id for m in msgs[1:]] == [event_msg_id("t1", 1, i) for i in firsts] + [final_msg_id("t1")]
    assert {m.key for m in msgs} == {"t1"}
    assert streamed(reports) == [(i, {"n": i}) for i in range(3)]
    final = control(queue)[-1]
    assert final.result == {"count": 1, "who": "ada"}
    assert final.context is not None
    assert (final.replica_id, final.session_id, final.attempt) == ("svc-1", "s1", 1)
    assert final.started_at is not None and final.started_at <= final.at
    assert final.event_index == 3
    assert [e["type"] for e in final.events] == ["StopEvent"]
    first = reports[1].event or reports[1].events[0]
    assert first == {"value": {"n": 0}, "type": "Progress", "qualified_name": "flows.Progress"}


async def test_a_quick_task_reports_no_start_and_a_slow_one_does(serving: Any) -> None:
    worker, queue = serving("funcs:add")
    await submit(queue, "quick", input={"a": 1})
    await queue.wait_for(lambda: finished(queue, "quick"))
    assert kinds(queue, "quick") == ["task.completed"]
    final = control(queue)[-1]
    assert final.started_at is not None and final.events == []

    worker, queue = serving("gated:wait_gate")
    await submit(queue, "slow", input={"n": 1})
    await queue.wait_for(lambda: kinds(queue, "slow") == ["task.started"])
    worker.runnable.fn.__globals__["gate"].set()
    await queue.wait_for(lambda: finished(queue, "slow"))
    assert kinds(queue, "slow") == ["task.started", "task.completed"]


async def test_a_task_that_ends_well_within_a_tenth_of_a_second_reports_no_start(serving: Any) -> None:
    """Under load every task takes tens of milliseconds (the worker's loop is shared): a task
    of a few tens of milliseconds must not pay for a task.started report (it did at 10 ms)."""
    _, queue = serving("funcs:nap")
    await submit(queue, "short", input={"seconds": 0.03})
    await queue.wait_for(lambda: finished(queue, "short"))
    assert kinds(queue, "short") == ["task.completed"]


async def test_context_from_the_task_message_is_used(serving: Any) -> None:
    _, queue = serving("flows:counter")
    await submit(queue, "t1")
    await queue.wait_for(lambda: finished(queue, "t1"))
    await submit(queue, "t2", context=control(queue)[-1].context)
    await queue.wait_for(lambda: finished(queue, "t2"))
    assert control(queue)[-1].result["count"] == 2


@pytest.mark.skipif(not TAKES_RUN_ID, reason="workflows before 2.14 take no run id")
async def test_a_workflow_run_is_named_after_its_task_and_attempt(serving: Any) -> None:
    _, queue = serving("flows:run_ids")
    await submit(queue, "t1", input={"who": "ada"})
    await queue.wait_for(lambda: finished(queue, "t1"))
    first = control(queue)[-1].result
    assert first["fields"] == ["who"]
    task, attempt, number = first["run_id"].split(":")
    assert (task, attempt) == ("t1", "1")
    # The same task and attempt again in this process (handed out again, resumed after a
    # question) is a run of its own: the library refuses a run id it still holds.
    _, again = serving("flows:run_ids")
    await submit(again, "t1", input={"who": "ada"})
    await again.wait_for(lambda: finished(again, "t1"))
    assert control(again)[-1].result["run_id"] == f"t1:1:{int(number) + 1}"


async def test_no_more_than_max_concurrency_at_once(serving: Any) -> None:
    worker, queue = serving("gated:wait_gate", max_concurrency=2)
    for i in range(4):
        await submit(queue, f"t{i}", input={"n": i})
    await queue.wait_for(lambda: kinds(queue).count("task.started") == 2)
    for _ in range(20):
        await asyncio.sleep(0)  # let the loop run: nothing may start while both slots are taken
    assert len(queue.deliveries) == 2
    assert worker.in_flight == 2
    worker.runnable.fn.__globals__["gate"].set()
    await queue.wait_for(lambda: kinds(queue).count("task.completed") == 4)
    assert sorted(m.result for m in control(queue) if m.kind is K.TASK_COMPLETED) == [0, 1, 2, 3]


async def test_a_slot_is_free_once_the_result_left_before_the_broker_confirms_it(serving: Any) -> None:
    """The confirmation is the server's work: a worker waiting for it would idle (at one slot,
    a second task would wait for the first one's confirmation)."""
    _, queue = serving("funcs:add", max_concurrency=1)
    confirm = queue.held_confirms[final_msg_id("t1")] = asyncio.Event()
    await submit(queue, "t1", input={"a": 1})
    await queue.wait_for(lambda: finished(queue, "t1"))
    await submit(queue, "t2", input={"a": 2})
    await queue.wait_for(lambda: finished(queue, "t2"))
    assert queue.deliveries[0].state == "leased"  # t1's result not confirmed yet
    confirm.set()
    await queue.wait_for(lambda: queue.deliveries[0].state == "acked")


async def test_the_queue_is_given_the_limit_as_its_prefetch(serving: Any) -> None:
    worker, queue = serving("funcs:add", max_concurrency=16)
    await submit(queue, "t1", input={"a": 1})
    await queue.wait_for(lambda: finished(queue, "t1"))
    assert queue.consumers[0]["prefetch"] == worker.limit == 16


async def test_human_in_the_loop_through_the_input_topic(serving: Any) -> None:
    _, queue = serving("flows:asker")
    await submit(queue, "t1")
    await queue.wait_for(
        lambda: any(m.event and m.event["type"] == "InputRequiredEvent" for m in control(queue))
    )
    answer = JsonSerializer().serialize(HumanResponseEvent(response="Ada"))
    data = TaskInput(kind=TaskInputKind.EVENT, event_obj_str=answer).model_dump_json().encode()
    await queue.publish(topics.task_input_topic("dep", "t1"), data)
    await queue.wait_for(lambda: finished(queue, "t1"))
    assert control(queue)[-1].result == "hello Ada"


async def test_cancel_through_the_input_topic(serving: Any) -> None:
    _, queue = serving("flows:sleeper")
    await submit(queue, "t1")
    await queue.wait_for(lambda: "task.event" in kinds(queue))
    data = TaskInput(kind=TaskInputKind.CANCEL).model_dump_json().encode()
    await queue.publish(topics.task_input_topic("dep", "t1"), data)
    await queue.wait_for(lambda: finished(queue, "t1"))
    assert kinds(queue)[-1] == "task.cancelled"
    await queue.wait_for(lambda: queue.deliveries[0].state == "acked")


async def test_failure_and_timeout_are_results(serving: Any) -> None:
    _, queue = serving("flows:sleeper", timeout=0.1)
    await submit(queue, "t1")
    await submit(queue, "t2", timeout=0.2)
    await queue.wait_for(lambda: finished(queue, "t1") and finished(queue, "t2"))
    errors = {m.task_id: (m.error or "").partition(",")[0] for m in control(queue) if m.kind is K.TASK_FAILED}
    assert errors == {  # then where the code was: test_timeout_where
        "t1": "TimeoutError: timed out after 0.1 s",
        "t2": "TimeoutError: timed out after 0.2 s",
    }


async def test_raising_workflow_reports_error_and_traceback(serving: Any) -> None:
    _, queue = serving("flows:raiser")
    await submit(queue, "t1")
    await queue.wait_for(lambda: finished(queue, "t1"))
    final = control(queue)[-1]
    assert (final.kind, final.error) == (K.TASK_FAILED, "ValueError: bad input: 7")
    assert final.traceback is not None and "in check" in final.traceback
    assert final.context is not None


async def test_lease_is_extended_while_the_task_runs(serving: Any) -> None:
    worker, queue = serving("gated:wait_gate", lease=0.15)
    await submit(queue, "t1", input={"n": 1})
    await queue.wait_for(lambda: bool(queue.deliveries) and queue.deliveries[0].extends >= 2)
    worker.runnable.fn.__globals__["gate"].set()
    await queue.wait_for(lambda: finished(queue, "t1"))


async def test_a_task_handed_out_again_to_the_same_worker_runs_there_once(serving: Any) -> None:
    """A worker taken for dead while it ran a task (stopped past the broker's heartbeat wait) can
    get that task again, attempt 2, once it runs on: it ran both attempts side by side."""
    worker, queue = serving("flows:sleeper")
    await submit(queue, "t1")
    await queue.wait_for(lambda: "task.event" in kinds(queue, "t1"))
    queue.redeliver(queue.deliveries[0])
    await queue.wait_for(lambda: any(m.attempt == 2 and m.kind is K.TASK_EVENT for m in control(queue)))
    await queue.wait_for(lambda: worker.in_flight == 1)  # the older run is stopped, not finished
    assert not finished(queue, "t1")


async def test_heartbeats_carry_in_flight(serving: Any) -> None:
    _, queue = serving("gated:wait_gate", heartbeat_interval=0.02)
    await submit(queue, "t1", input={"n": 1})
    await queue.wait_for(
        lambda: any(m.kind is K.REPLICA_HEARTBEAT and m.in_flight == 1 for m in control(queue))
    )
    beat = next(m for m in control(queue) if m.kind is K.REPLICA_HEARTBEAT)
    assert (beat.max_concurrency, beat.replica_id, beat.task_id) == (2, "svc-1", None)
    assert beat.concurrency_limit == 2  # how many it starts at once: all of them, nothing computed yet


async def test_a_malformed_task_message_fails_its_task_instead_of_vanishing(serving: Any) -> None:
    _, queue = serving("flows:counter")
    await queue.publish(SERVICE, b"not json", msg_id="t0:start")
    await queue.wait_for(lambda: finished(queue, "t0"))
    (report,) = [m for m in control(queue) if m.task_id == "t0"]
    assert report.kind is K.TASK_FAILED
    assert report.error is not None and "could not read the task message" in report.error
    assert queue.deliveries[0].state == "acked"
    await submit(queue, "t1")  # and the worker goes on
    await queue.wait_for(lambda: finished(queue, "t1"))


async def test_a_task_whose_report_fails_gives_its_delivery_and_its_slot_back(serving: Any) -> None:
    """Before: the delivery was left unsettled, so its credit never came back and, after
    max-concurrency such failures, the replica looked ready and received nothing."""
    _, queue = serving("funcs:add", max_concurrency=1)
    queue.refuse.add(final_msg_id("t1"))
    await submit(queue, "t1", input={"a": 1, "b": 2})
    await queue.wait_for(lambda: bool(queue.deliveries) and queue.deliveries[0].state == "nacked")
    await submit(queue, "t2", input={"a": 2, "b": 2})  # the one slot is free again
    await queue.wait_for(lambda: finished(queue, "t2"))


async def test_a_message_that_names_no_task_is_dropped(serving: Any) -> None:
    _, queue = serving("flows:counter")
    await queue.publish(SERVICE, b"not json", msg_id="stray")
    await queue.wait_for(lambda: bool(queue.deliveries) and queue.deliveries[0].state == "acked")
    assert control(queue) == [m for m in control(queue) if m.task_id is None]


async def test_stop_drains_in_flight_tasks(spec: WorkerSpec) -> None:
    queue = FakeQueue()
    runnable = adapt(load_target(Path(spec.source_dir), "gated:wait_gate"))
    worker = Worker(spec, queue, runnable)
    serving = asyncio.create_task(worker.serve())
    await submit(queue, "t1", input={"n": 1})
    await queue.wait_for(lambda: "task.started" in kinds(queue))
    worker.request_stop()
    await queue.wait_for(lambda: "replica.stopping" in kinds(queue))
    await submit(queue, "t2", input={"n": 2})  # arrives while draining: never started
    assert not serving.done()
    runnable.fn.__globals__["gate"].set()  # type: ignore[attr-defined]
    await asyncio.wait_for(serving, 10)
    assert kinds(queue, "t1") == ["task.started", "task.completed"]
    assert kinds(queue, "t2") == []
    assert queue.deliveries[0].state == "acked"


async def test_run_worker_publishes_replica_up(spec: WorkerSpec) -> None:
    queue = FakeQueue()
    running = asyncio.create_task(
        run_worker(spec.model_copy(update={"env": {"LLAMACTL_T": "1"}}), connect=lambda _: queue)
    )
    await queue.wait_for(lambda: "replica.up" in kinds(queue))
    up = control(queue)[0]
    assert (up.replica_id, up.service_id, up.generation, up.max_concurrency) == ("svc-1", "svc", 1, 2)
    assert queue.topics[CONTROL][0].key == "svc-1"
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0
    assert kinds(queue)[-1] == "replica.stopping"
    assert queue.closed
    assert os.environ.pop("LLAMACTL_T") == "1"


async def test_run_worker_reports_a_load_failure(spec: WorkerSpec) -> None:
    queue = FakeQueue()
    code = await run_worker(spec.model_copy(update={"import_path": "flows:nope"}), connect=lambda _: queue)
    assert code == EXIT_LOAD_FAILED
    [failed] = control(queue)
    assert failed.kind is K.REPLICA_FAILED
    assert failed.error is not None and "has no attribute 'nope'" in failed.error
    assert queue.closed
    assert json.loads(queue.topics[CONTROL][0].payload)["replica_id"] == "svc-1"


def _answer(queue: FakeQueue, task_id: str, text: str) -> Any:
    event = JsonSerializer().serialize(HumanResponseEvent(response=text))
    data = TaskInput(kind=TaskInputKind.EVENT, event_obj_str=event).model_dump_json().encode()
    return queue.publish(topics.task_input_topic("dep", task_id), data)


async def _suspended(serving: Any) -> tuple[FakeQueue, WorkerMessage]:
    """Task t1 of an asker asks; its worker stops: the queue, and the task.suspended report."""
    worker, queue = serving("flows:asker")
    await submit(queue, "t1")
    await queue.wait_for(lambda: "task.event" in kinds(queue, "t1"))
    worker.request_stop()
    await queue.wait_for(lambda: "task.suspended" in kinds(queue, "t1"))
    return queue, next(m for m in control(queue) if m.kind is K.TASK_SUSPENDED)


async def test_a_stop_suspends_a_task_that_waits_for_an_answer_with_its_context(serving: Any) -> None:
    queue, report = await _suspended(serving)
    assert report.context is not None and report.context.get("is_running")
    assert report.event is not None and report.event["value"] == {"prefix": "name?"}
    assert (report.attempt, report.inputs_from) == (1, 0)
    assert "t1:1:suspended" in [m.msg_id for m in queue.topics[CONTROL]]
    await queue.wait_for(lambda: queue.deliveries[0].state == "acked")  # with the report


async def test_a_resumed_task_asks_again_and_reads_the_inputs_its_attempt_had_not(serving: Any) -> None:
    _, report = await _suspended(serving)
    assert report.context is not None
    _, again = serving("flows:asker")  # another worker, over a queue of its own
    await _answer(again, "t1", "stale")  # what the suspended attempt had read already
    await _answer(again, "t1", "Ada")  # sent while no worker had the task
    resume = TaskResume(attempt=1, context=report.context, question=report.event, inputs_from=1)
    await submit(again, "t1", resume=resume)
    await again.wait_for(lambda: finished(again, "t1"))
    messages = control(again)
    assert next(m.kind.value for m in messages if m.task_id == "t1") == "task.started"
    started = messages[[m.kind for m in messages].index(K.TASK_STARTED)]
    assert (started.attempt, started.resumed) == (2, True)
    events = [m for m in messages if m.kind is K.TASK_EVENT]
    assert (events[0].event or events[0].events[0]) == report.event  # asked again, first
    assert messages[-1].result == "hello Ada"


async def test_a_resume_the_code_cannot_take_runs_the_task_from_its_start(serving: Any) -> None:
    _, queue = serving("flows:counter")
    resume = TaskResume(attempt=1, context={"workers": {"ask": {"collected_waiters": [{}]}}}, question=None)
    await submit(queue, "t1", resume=resume)
    await queue.wait_for(lambda: finished(queue, "t1"))
    started = next(m for m in control(queue) if m.kind is K.TASK_STARTED)
    assert (started.attempt, started.resumed) == (2, False)
    assert control(queue)[-1].result == {"count": 1, "who": None}


async def test_a_suspension_the_queue_does_not_confirm_does_not_hold_the_stop(
    spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("llamactl.server.services.reporter.SUSPEND_REPORT_TIMEOUT", 0.2)
    queue = FakeQueue()
    queue.held_confirms["t1:1:suspended"] = asyncio.Event()  # never confirmed
    worker = Worker(spec, queue, adapt(load_target(Path(spec.source_dir), "flows:asker")))
    serving = asyncio.create_task(worker.serve())
    await submit(queue, "t1")
    await queue.wait_for(lambda: "task.event" in kinds(queue, "t1"))
    worker.request_stop()
    await asyncio.wait_for(serving, 10)  # drained: not held by the report
    assert queue.deliveries[0].state == "leased"  # not settled here: it goes back with the consumer
    assert "did not confirm where it waits" in caplog.text
