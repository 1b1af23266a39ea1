"""A task whose result or event is larger than its service's `max-result-size`, or that streams
more than its `max-events`, fails at once, once, saying so. Before the size limit, a result over
the broker's 1 GiB frame limit had the worker's connection closed as "not llamactl's protocol",
ran five times (70 s for a 1.1 GB string), and failed as "consumer lost (the worker crashed...)";
before the count, a run streaming without end stored every event (~600 bytes each on disk)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llamactl.client import Client, TaskFailed
from tests.llamactl.serving import Server, write_app

BIG = """
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent


async def sized(kb: int = 1) -> str:
    return "x" * (kb * 1024)


async def many(n: int = 1):
    for i in range(n):
        yield {"i": i}


async def streamed(kb: int = 1):
    yield "small"
    yield "x" * (kb * 1024)
    yield "never sent"


class Chunk(Event):
    text: str


class StreamingBig(Workflow):
    @step
    async def stream(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Chunk(text="x" * (ev.kb * 1024)))
        return StopEvent(result="streamed")


streaming_big = StreamingBig(timeout=30)
"""

SERVICES = {"sized": "big:sized", "streamed": "big:streamed", "flow": "big:streaming_big", "many": "big:many"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    folder = tmp_path_factory.mktemp("limits")
    file = write_app(folder, "limits", SERVICES)
    (folder / "src" / "big.py").write_text(BIG)
    text = file.read_text().replace(
        "    path: big:", "    max-result-size: 64K\n    max-events: 5\n    path: big:"
    )
    file.write_text(text)
    server = Server(file)
    try:
        with Client(server.url, timeout=60) as client:
            yield client
    finally:
        server.stop()


def _fails_with_the_limit(client: Client, service: str, what: str) -> None:
    tasks = client.deployment("limits").tasks
    with pytest.raises(TaskFailed) as caught:
        tasks.run({"kb": 100}, service=service)
    detail = caught.value.detail
    assert "ResultTooLarge" in detail and what in detail, detail
    assert "over the limit of 64 KB" in detail and f"service '{service}'" in detail, detail
    assert "max-result-size" in detail, detail
    assert caught.value.task_id is not None
    record = tasks.get(caught.value.task_id)
    assert record.attempts == 1, "a result too large ran again"


def test_a_result_over_the_limit_fails_its_task_once_and_says_why(client: Client) -> None:
    _fails_with_the_limit(client, "sized", "the result of task")
    assert client.deployment("limits").tasks.run({"kb": 60}, service="sized") == "x" * 60 * 1024


def test_an_event_over_the_limit_fails_its_task_and_the_events_before_it_stay(client: Client) -> None:
    _fails_with_the_limit(client, "streamed", "event 1 of task")
    tasks = client.deployment("limits").tasks
    failed = next(t for t in tasks.list(status="failed") if t.service_id == "streamed")
    values = [event.value for event in tasks.events(failed.task_id)]
    assert "small" in str(values) and "never sent" not in str(values)


def test_a_workflow_event_over_the_limit_fails_the_run(client: Client) -> None:
    _fails_with_the_limit(client, "flow", "event 0 of task")
    assert client.deployment("limits").tasks.run({"kb": 1}, service="flow") == "streamed"


def test_a_run_streaming_more_than_max_events_fails_and_keeps_the_first(client: Client) -> None:
    tasks = client.deployment("limits").tasks
    assert tasks.run({"n": 5}, service="many") == {"i": 4}
    with pytest.raises(TaskFailed) as caught:
        tasks.run({"n": 1000}, service="many")
    detail = caught.value.detail
    assert "TooManyEvents" in detail and "streamed more than 5 events" in detail, detail
    assert "service 'many'" in detail and "max-events" in detail, detail
    assert caught.value.task_id is not None
    assert tasks.get(caught.value.task_id).attempts == 1
    assert [event.value for event in tasks.events(caught.value.task_id)] == [{"i": i} for i in range(5)]
