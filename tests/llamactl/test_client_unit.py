"""The client without a server: settings, errors, SSE parsing and stream resumption."""

from __future__ import annotations

import json

import httpx
import pytest

from llamactl.client import (
    AsyncClient,
    BackendUnavailable,
    BadRequest,
    Client,
    Conflict,
    DeploymentDeleting,
    DeploymentStarting,
    NotFound,
    NotLlamactlServer,
    ServerError,
    ServerStopping,
    ServerUnreachable,
    StreamBroken,
    TaskFailed,
    Unauthorized,
)
from llamactl.client._base import SSEDecoder
from llamactl.client._streams import MAX_RECONNECTS
from llamactl.client.errors import error_for_status
from tests.llamactl.fakes import Broken, FakeServer, envelope, sse, task_record

EVENTS = "/deployments/demo/tasks/t1/events"


def test_base_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMACTL_SERVER", "http://example.test:9999/")
    monkeypatch.setenv("LLAMACTL_API_TOKEN", "s3cret")
    fake = FakeServer()
    fake.on("GET", "/status/", {"status": "Healthy", "deployments": ["demo"]})
    with Client(transport=httpx.MockTransport(fake)) as client:
        assert client.base_url == "http://example.test:9999"
        assert client.status().deployments == ["demo"]
    assert fake.requests[0].headers["authorization"] == "Bearer s3cret"


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMACTL_SERVER", raising=False)
    monkeypatch.delenv("LLAMACTL_API_TOKEN", raising=False)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:4501"
        assert "authorization" not in client._http.headers


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (422, BadRequest),
        (503, ServerError),
    ],
)
def test_error_statuses_map_to_typed_errors(status: int, cls: type[Exception]) -> None:
    error = error_for_status(status, {"detail": "what is wrong"})
    assert type(error) is cls
    assert str(error) == "what is wrong"


def test_a_failed_task_carries_its_id_and_status() -> None:
    error = error_for_status(424, {"detail": "ValueError: no", "task_id": "t1", "status": "failed"})
    assert isinstance(error, TaskFailed)
    assert (error.task_id, error.task_status, error.detail) == ("t1", "failed", "ValueError: no")


def test_validation_details_become_one_line() -> None:
    error = error_for_status(422, {"detail": [{"loc": ["body", "input"], "msg": "bad"}, {"msg": "worse"}]})
    assert str(error) == "body.input: bad; worse"
    assert str(error_for_status(500, None, "boom")) == "boom"


def test_a_503_says_whether_the_deployment_is_starting_or_being_deleted() -> None:
    starting = error_for_status(503, {"detail": "Deployment 'd' is starting", "state": "starting"})
    assert isinstance(starting, DeploymentStarting) and starting.status == 503
    deleting = error_for_status(503, {"detail": "deployment 'd' is being deleted", "state": "deleting"})
    assert isinstance(deleting, DeploymentDeleting) and deleting.status == 503
    stopping = error_for_status(503, {"detail": "Deployment 'd' is stopping", "state": "stopping"})
    assert type(stopping) is ServerError


def test_a_503_of_an_unreachable_store_or_queue_is_backend_unavailable() -> None:
    detail = "the server cannot record this right now (...): nothing was kept, try again in a moment"
    error = error_for_status(503, {"detail": detail, "unavailable": "state_store"})
    assert isinstance(error, BackendUnavailable) and error.backend == "state_store"
    # a waiter's 503 names its task, as a stopping server's does: the outage still wins
    error = error_for_status(503, {"detail": detail, "unavailable": "message_queue", "task_id": "t"})
    assert isinstance(error, BackendUnavailable) and error.backend == "message_queue"


def _outage_fake() -> FakeServer:
    """A stream that breaks after seq 0, then more 503s of an unreachable store than a lost stream
    is ever retried, then the rest."""
    fake = FakeServer()
    first = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=Broken(sse((0, "Progress", envelope(0, 0)))),
    )
    body = {"detail": "the server cannot record this right now", "unavailable": "state_store"}
    unavailable = [httpx.Response(503, json=body) for _ in range(MAX_RECONNECTS + 3)]
    rest = sse((1, "Progress", envelope(1, 1)), (None, "end", {"status": "completed"}))
    last = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=rest)
    fake.on("GET", EVENTS, [first, *unavailable, last])
    return fake


def test_a_followed_stream_waits_out_an_unreachable_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llamactl.client.sync.backoff", lambda failures: 0.0)
    fake = _outage_fake()
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        events = list(client.deployment("demo").tasks.events("t1"))
    assert [e.seq for e in events] == [0, 1]
    assert fake.requests[-1].url.params["from_seq"] == "1"


async def test_the_async_client_waits_out_an_unreachable_store_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llamactl.client.aio.backoff", lambda failures: 0.0)
    fake = _outage_fake()
    async with AsyncClient("http://fake", transport=httpx.MockTransport(fake)) as client:
        events = [e async for e in client.deployment("demo").tasks.events("t1")]
    assert [e.seq for e in events] == [0, 1]


def test_sse_decoder_handles_comments_ids_and_multiline_data() -> None:
    decoder = SSEDecoder()
    lines = [
        "retry: 1000",
        "",
        ": keepalive",
        "",
        "id: 3",
        "event: Progress",
        'data: {"a":',
        "data: 1}",
        "",
        "data: x",
        "",
    ]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert [(e.id, e.event, e.data) for e in events] == [
        ("3", "Progress", '{"a":\n1}'),
        (None, "message", "x"),
    ]
    assert events[0].json() == {"a": 1}


def _resuming_fake() -> FakeServer:
    fake = FakeServer()
    first = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=Broken(sse((0, "Progress", envelope(0, 0)))),
    )
    # the server resends seq 0 on purpose: the client must drop what it has already seen
    rest = sse(
        (0, "Progress", envelope(0, 0)),
        (1, "Progress", envelope(1, 1)),
        (None, "end", {"status": "completed"}),
    )
    second = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=rest)
    fake.on("GET", EVENTS, [first, second])
    return fake


def test_a_dropped_event_stream_resumes_after_the_last_event_seen() -> None:
    fake = _resuming_fake()
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        events = list(client.deployment("demo").tasks.events("t1"))
    assert [e.seq for e in events] == [0, 1]
    first, second = fake.requests
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "0"
    assert second.url.params["from_seq"] == "1"
    assert first.headers["accept"] == "text/event-stream"


async def test_the_async_client_resumes_a_dropped_stream_too() -> None:
    fake = _resuming_fake()
    async with AsyncClient("http://fake", transport=httpx.MockTransport(fake)) as client:
        events = [e async for e in client.deployment("demo").tasks.events("t1")]
    assert [e.seq for e in events] == [0, 1]
    assert fake.requests[1].headers["last-event-id"] == "0"


def test_the_change_feed_s_health_notices_come_through_without_moving_its_resume_point() -> None:
    fake = FakeServer()
    change = {"kind": "task.status", "deployment": "demo", "data": {}, "at": 1.0}
    health = {"state_store": {"reachable": False, "state": "refusing writes"}}
    notice = {"kind": "health", "deployment": "demo", "data": health, "at": 1.0, "seq": -1}
    first = sse((4, "task.status", {**change, "seq": 4}), (None, "health", notice))
    again = sse((4, "task.status", {**change, "seq": 4}), (5, "task.status", {**change, "seq": 5}))
    changes = "/deployments/demo/changes"
    kind = {"content-type": "text/event-stream"}
    broken = httpx.Response(200, headers=kind, stream=Broken(first))
    fake.on("GET", changes, [broken, httpx.Response(200, headers=kind, content=again)])
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        feed = client.deployment("demo").changes(4)
        seen = [next(feed) for _ in range(3)]
    assert [(c.kind, c.seq) for c in seen] == [("task.status", 4), ("health", -1), ("task.status", 5)]
    assert seen[1].data == health
    assert fake.requests[1].headers["last-event-id"] == "4"


def test_a_stream_that_keeps_failing_gives_up_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llamactl.client.sync.backoff", lambda failures: 0.0)
    fake = FakeServer()
    fake.on("GET", EVENTS, lambda _: httpx.Response(200, stream=Broken(b": keepalive\n\n")))
    with (
        Client("http://fake", transport=httpx.MockTransport(fake)) as client,
        pytest.raises(StreamBroken, match="not resumable"),
    ):
        list(client.deployment("demo").tasks.events("t1"))
    # one try and five resumptions (after the first break, one GET /healthz asks what answers there)
    assert len([r for r in fake.requests if r.url.path == EVENTS]) == 6


def test_raw_events_use_llama_deploys_ndjson_form() -> None:
    fake = FakeServer()
    line = {"__is_pydantic": True, "value": {"n": 1}, "qualified_name": "flows.Progress"}
    fake.on("GET", EVENTS, httpx.Response(200, content=(json.dumps(line) + "\n").encode()))
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        assert list(client.deployment("demo").tasks.events("t1", raw=True)) == [line]
    assert fake.requests[0].url.params["raw_event"] == "true"


def test_send_event_serializes_fields_and_looks_up_the_service() -> None:
    fake = FakeServer()
    fake.on("GET", "/deployments/demo/tasks/t1", task_record(service_id="hitl", status="running"))
    fake.on("POST", EVENTS, lambda r: httpx.Response(200, json=json.loads(r.content)))
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        sent = client.deployment("demo").tasks.send_event("t1", {"response": "42"})
    assert sent.service_id == "hitl"
    assert json.loads(sent.event_obj_str) == {
        "__is_pydantic": True,
        "value": {"response": "42"},
        "qualified_name": "workflows.events.HumanResponseEvent",
    }


def test_a_closed_port_is_server_unreachable() -> None:
    with Client("http://127.0.0.1:9") as client, pytest.raises(ServerUnreachable) as caught:
        client.status()
    assert str(caught.value) == "no server answers at http://127.0.0.1:9 (connection refused)"


def test_task_input_is_a_json_object_string() -> None:
    fake = FakeServer()
    fake.on("POST", "/deployments/demo/tasks/run", lambda r: httpx.Response(200, json=json.loads(r.content)))
    with Client("http://fake", transport=httpx.MockTransport(fake)) as client:
        body = client.deployment("demo").tasks.run({"n": 1}, service="func", session_id="s9")
    assert json.loads(body["input"]) == {"n": 1}
    assert (body["service_id"], body["session_id"]) == ("func", "s9")


@pytest.mark.parametrize(
    ("healthz", "error"),
    [
        (httpx.Response(200, json={"status": "ok"}), ServerUnreachable),
        (httpx.Response(404, json={"detail": "no route GET /healthz"}), ServerUnreachable),
        (httpx.Response(503, json={"detail": "the server is stopping", "stopping": True}), ServerStopping),
        (
            httpx.Response(404, text="<html>Not Found</html>", headers={"content-type": "text/html"}),
            NotLlamactlServer,
        ),
    ],
)
def test_a_request_that_breaks_off_asks_healthz_what_answers_there(
    healthz: httpx.Response, error: type[Exception]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return healthz
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with (
        Client("http://fake", transport=httpx.MockTransport(answer)) as client,
        pytest.raises(error) as caught,
    ):
        client.status()
    assert type(caught.value) is error
