"""Tasks, streams, human in the loop, sessions and cancel through the real HTTP server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.state.sqlite import SQLiteStateStore
from tests.server.apiserver.conftest import read_sse, task_input

pytestmark = pytest.mark.asyncio(loop_scope="module")

D = "/deployments/main"


async def create(client: httpx.AsyncClient, service: str | None = None, **kwargs: object) -> dict[str, str]:
    response = await client.post(
        f"{D}/tasks/create", json={"input": task_input(**kwargs), "service_id": service}
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def first_event(client: httpx.AsyncClient, task_id: str) -> dict[str, object]:
    """The first raw event of a task (waits for it)."""
    async with client.stream("GET", f"{D}/tasks/{task_id}/events", params={"raw_event": "true"}) as stream:
        async for line in stream.aiter_lines():
            if line:
                event: dict[str, object] = json.loads(line)
                return event
    raise AssertionError("the stream ended without an event")


async def test_run_answers_the_workflows_raw_result(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{D}/tasks/run", json={"input": task_input(message="hi")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == "Message received: hi"


async def test_run_accepts_llama_deploys_exact_body(client: httpx.AsyncClient) -> None:
    body = {
        "input": '{"message": "hi", "n": "3"}',
        "task_id": "1cf66f46-0000-4000-8000-000000000001",
        "session_id": None,
        "service_id": "echo",
    }
    response = await client.post(f"{D}/tasks/run", json=body)
    assert response.json() == "Message received: hi"
    record = (await client.get(f"{D}/tasks/{body['task_id']}")).json()
    assert record["status"] == "completed" and record["service_id"] == "echo"


async def test_run_of_a_failing_workflow_is_424_with_the_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{D}/tasks/run", json={"input": task_input(message="x"), "service_id": "boom"}
    )
    assert response.status_code == 424
    body = response.json()
    assert body["detail"] == "ValueError: cannot handle 'x'"
    assert body["status"] == "failed" and body["task_id"]


async def test_create_fills_in_ids_and_results_waits_for_the_end(client: httpx.AsyncClient) -> None:
    created = await create(client, message="later")
    assert created["task_id"] and created["session_id"] and created["service_id"] == "echo"
    assert json.loads(created["input"]) == {"message": "later"}
    result = await client.get(
        f"{D}/tasks/{created['task_id']}/results", params={"session_id": created["session_id"]}
    )
    assert result.json() == {
        "task_id": created["task_id"],
        "history": [],
        "result": "Message received: later",
        "data": {"status": "completed"},
    }


async def test_results_answer_null_when_the_timeout_runs_out(client: httpx.AsyncClient) -> None:
    created = await create(client, "hitl")
    response = await client.get(f"{D}/tasks/{created['task_id']}/results", params={"timeout": "0.2"})
    assert response.status_code == 200 and response.json() is None
    assert (await client.post(f"{D}/tasks/{created['task_id']}/cancel")).status_code == 200


async def test_get_and_list_tasks_with_filters(client: httpx.AsyncClient) -> None:
    created = await create(client, message="listed")
    await client.get(f"{D}/tasks/{created['task_id']}/results")
    record = (await client.get(f"{D}/tasks/{created['task_id']}")).json()
    assert record["status"] == "completed" and record["result"] == "Message received: listed"
    assert record["attempts"] == 1 and record["replica_id"] == "echo#1"
    in_session = (await client.get(f"{D}/tasks", params={"session_id": created["session_id"]})).json()
    assert [t["task_id"] for t in in_session] == [created["task_id"]]
    completed = (await client.get(f"{D}/tasks", params={"status": "completed"})).json()
    assert created["task_id"] in {t["task_id"] for t in completed}
    assert all(t["status"] == "completed" for t in completed)
    bad = await client.get(f"{D}/tasks", params={"status": "sleeping"})
    assert bad.status_code == 400 and "queued" in bad.json()["detail"]


async def test_an_open_event_stream_reads_nothing_while_its_task_is_quiet(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream is woken by its task's new events and its end: it does not poll the store."""
    reads: list[str] = []
    original = SQLiteStateStore.read

    async def counted(self: SQLiteStateStore, stream: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(stream)
        return await original(self, stream, *args, **kwargs)

    monkeypatch.setattr(SQLiteStateStore, "read", counted)
    created = await create(client, "hitl")
    task_id = created["task_id"]
    async with client.stream("GET", f"{D}/tasks/{task_id}/events") as stream:
        lines = stream.aiter_lines()
        assert "prefix" in await anext(lines)  # the workflow waits for a human from here on
        before = sum(task_id in s for s in reads)
        await asyncio.sleep(0.8)  # a quiet window: the task waits, nothing happens
        during = sum(task_id in s for s in reads) - before
        assert (await client.post(f"{D}/tasks/{task_id}/cancel")).status_code == 200
        async for _line in lines:  # the stream ends once the task is cancelled
            pass
    assert during == 0, f"the stream read the task's log {during} times while nothing happened"


async def test_ndjson_stream_lines_are_event_values(client: httpx.AsyncClient) -> None:
    created = await create(client, "stream", count=3)
    async with client.stream("GET", f"{D}/tasks/{created['task_id']}/events") as stream:
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in stream.aiter_lines() if line]
    assert lines == [{"n": 0}, {"n": 1}, {"n": 2}, {"result": 3}]


async def test_ndjson_stream_with_raw_event_is_llama_deploys_shape(client: httpx.AsyncClient) -> None:
    created = await create(client, "stream", count=2)
    url = f"{D}/tasks/{created['task_id']}/events"
    params = {"session_id": created["session_id"], "raw_event": "true"}
    async with client.stream("GET", url, params=params) as stream:
        lines = [json.loads(line) async for line in stream.aiter_lines() if line]
    assert lines[0] == {"__is_pydantic": True, "value": {"n": 0}, "qualified_name": "flows.Progress"}
    assert lines[-1]["qualified_name"] == "workflows.events.StopEvent"
    assert len(lines) == 3


async def test_sse_stream_has_ids_and_resumes_after_last_event_id(client: httpx.AsyncClient) -> None:
    created = await create(client, "stream", count=4)
    url = f"{D}/tasks/{created['task_id']}/events"
    sse = {"accept": "text/event-stream"}
    async with client.stream("GET", url, headers=sse) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        frames = await read_sse(stream)
    assert [f.id for f in frames[:-1]] == [0, 1, 2, 3, 4]
    assert [f.event for f in frames] == ["Progress"] * 4 + ["StopEvent", "end"]
    assert json.loads(frames[1].data)["value"] == {"n": 1}
    assert json.loads(frames[-1].data)["status"] == "completed"
    async with client.stream("GET", url, headers={**sse, "Last-Event-ID": "2"}) as stream:
        resumed = await read_sse(stream)
    assert [f.id for f in resumed[:-1]] == [3, 4]
    async with client.stream("GET", url, headers=sse, params={"from_seq": 4}) as stream:
        tail = await read_sse(stream)
    assert [f.event for f in tail] == ["StopEvent", "end"]
    bad = await client.get(url, headers={**sse, "Last-Event-ID": "x"})
    assert bad.status_code == 400


async def test_human_in_the_loop_through_events(client: httpx.AsyncClient) -> None:
    created = await create(client, "hitl")
    task_id, session_id = created["task_id"], created["session_id"]
    event = await first_event(client, task_id)
    assert event["qualified_name"] == "workflows.events.InputRequiredEvent"
    definition = {
        "service_id": "hitl",
        "event_obj_str": JsonSerializer().serialize(HumanResponseEvent(response="42")),
    }
    sent = await client.post(
        f"{D}/tasks/{task_id}/events", params={"session_id": session_id}, json=definition
    )
    assert sent.status_code == 200 and sent.json() == definition
    result = (await client.get(f"{D}/tasks/{task_id}/results", params={"session_id": session_id})).json()
    assert result["result"] == "the human said 42"
    late = await client.post(f"{D}/tasks/{task_id}/events", json=definition)
    assert late.status_code == 409
    assert "already finished" in late.json()["detail"]


async def test_an_event_that_is_not_a_serialized_event_is_400(client: httpx.AsyncClient) -> None:
    created = await create(client, "hitl")
    response = await client.post(
        f"{D}/tasks/{created['task_id']}/events", json={"service_id": "hitl", "event_obj_str": '{"a": 1}'}
    )
    assert response.status_code == 400 and "qualified_name" in response.json()["detail"]
    missing = await client.post(f"{D}/tasks/{created['task_id']}/events", json={"service_id": "hitl"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "event_obj_str"]  # FastAPI's shape
    await client.post(f"{D}/tasks/{created['task_id']}/cancel")


async def test_cancel_a_running_task(client: httpx.AsyncClient) -> None:
    created = await create(client, "hitl")
    task_id = created["task_id"]
    await first_event(client, task_id)  # it is running and waits for a human
    cancelled = await client.post(f"{D}/tasks/{task_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["task_id"] == task_id
    result = (await client.get(f"{D}/tasks/{task_id}/results")).json()
    assert result["data"]["status"] == "cancelled"
    again = await client.post(f"{D}/tasks/{task_id}/cancel")
    assert again.status_code == 409


async def test_run_without_a_session_saves_no_context_but_create_does(client: httpx.AsyncClient) -> None:
    """Nobody can run in a ``tasks/run``'s own session again (it answers only the result), so its
    Context is neither serialized by the worker nor stored, and the session has no record;
    ``tasks/create`` answers the session id, so its session and Context are kept."""
    body = {"input": "{}", "service_id": "counter", "task_id": "1cf66f46-0000-4000-8000-0000000000c1"}
    assert (await client.post(f"{D}/tasks/run", json=body)).json() == 1
    ran = (await client.get(f"{D}/tasks/{body['task_id']}")).json()
    created = await create(client, "counter")
    await client.get(f"{D}/tasks/{created['task_id']}/results", params={"session_id": created["session_id"]})
    sizes = (
        await client.get(
            f"{D}/dashboard/contexts", params={"session_id": [ran["session_id"], created["session_id"]]}
        )
    ).json()["contexts"]
    assert sizes[ran["session_id"]] is None
    assert sizes[created["session_id"]] > 0
    # tasks/run's session has no record either (Llama Deploy 0.9 makes none): only its task knows it
    assert (await client.get(f"{D}/sessions/{ran['session_id']}")).status_code == 404
    newest = (await client.get(f"{D}/sessions", params={"order": "desc", "limit": 20})).json()
    assert created["session_id"] in {s["session_id"] for s in newest}
    assert ran["session_id"] not in {s["session_id"] for s in newest}
    again = {"input": "{}", "service_id": "counter", "session_id": created["session_id"]}
    assert (await client.post(f"{D}/tasks/run", json=again)).json() == 2  # kept with a session


async def test_tasks_in_a_session_share_context(client: httpx.AsyncClient) -> None:
    session = (await client.post(f"{D}/sessions/create")).json()
    other = (await client.post(f"{D}/sessions")).json()
    assert session["task_ids"] == [] and session["state"] == {}
    sid = session["session_id"]
    first = await client.post(
        f"{D}/tasks/run", params={"session_id": sid}, json={"input": "", "service_id": "counter"}
    )
    second = await client.post(
        f"{D}/tasks/run", json={"input": "{}", "service_id": "counter", "session_id": sid}
    )
    third = await client.post(
        f"{D}/tasks/run",
        params={"session_id": sid},
        json={"input": "{}", "service_id": "counter", "session_id": other["session_id"]},
    )
    assert [first.json(), second.json(), third.json()] == [1, 2, 3]
    fresh = await client.post(
        f"{D}/tasks/run", json={"input": "{}", "service_id": "counter", "session_id": other["session_id"]}
    )
    assert fresh.json() == 1
    fetched = (await client.get(f"{D}/sessions/{sid}")).json()
    assert len(fetched["task_ids"]) == 3
    listed = {s["session_id"] for s in (await client.get(f"{D}/sessions")).json()}
    assert {sid, other["session_id"]} <= listed


async def test_delete_sessions_both_ways(client: httpx.AsyncClient) -> None:
    one = (await client.post(f"{D}/sessions/create")).json()["session_id"]
    two = (await client.post(f"{D}/sessions/create")).json()["session_id"]
    deleted = await client.post(f"{D}/sessions/delete", params={"session_id": one})
    assert deleted.status_code == 200 and deleted.json() is None
    assert (await client.delete(f"{D}/sessions/{two}")).json() is None
    for sid in (one, two):
        gone = await client.get(f"{D}/sessions/{sid}")
        assert gone.status_code == 404 and sid in gone.json()["detail"]
    assert (await client.post(f"{D}/sessions/delete")).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "/deployments/nope/tasks/run", {"input": "{}"}, 404, "Deployment 'nope' not found"),
        ("GET", "/deployments/nope", None, 404, "llamactl deployments list"),
        ("POST", f"{D}/tasks/run", {"input": "{}", "service_id": "nope"}, 404, "known services are"),
        ("POST", f"{D}/tasks/run", {"input": "{}", "session_id": "nope"}, 404, "Session 'nope' not found"),
        ("GET", f"{D}/tasks/nope", None, 404, "Task 'nope' not found"),
        ("GET", f"{D}/tasks/nope/events", None, 404, "Task 'nope' not found"),
        ("GET", f"{D}/tasks/nope/results", None, 404, "Task 'nope' not found"),
        ("POST", f"{D}/tasks/nope/cancel", None, 404, "Task 'nope' not found"),
        ("GET", f"{D}/sessions/nope", None, 404, "Session 'nope' not found"),
        ("POST", f"{D}/tasks/run", {"input": "not json"}, 400, "task input must be a JSON object"),
        ("POST", f"{D}/tasks/run", {"input": "[1, 2]"}, 400, "not list"),
        ("POST", f"{D}/tasks/create", {"input": 5}, 422, "string"),
        ("GET", "/no/such/route", None, 404, "no route GET /no/such/route"),
        ("DELETE", "/status/", None, 405, "not allowed"),
    ],
)
async def test_error_cases_answer_json_with_the_right_status(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int, needle: str
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert needle in json.dumps(response.json()["detail"])


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{D}/tasks/run", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    empty = await client.post(f"{D}/tasks/create", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
