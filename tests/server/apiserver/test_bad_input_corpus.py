"""A corpus of bad requests across every route of the API and of the control-plane port, sent to a
real server: each one is a 4xx with a JSON ``detail``, never a 500; the server then still runs
tasks and restarts cleanly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server.apiserver.conftest import DEPLOYMENT_YML, free_port, start_server, task_input

pytestmark = pytest.mark.asyncio(loop_scope="module")

D = "/deployments/main"
JSON = {"content-type": "application/json"}
DEEP = "[" * 1000 + "]" * 1000
LONG_ID = "t" * 1000


@dataclass
class Bad:
    """One bad request and the 4xx it must get."""

    method: str
    path: str
    status: int
    kwargs: dict[str, Any]
    port: str = "api"  # or "cp": the control-plane port


def bad(method: str, path: str, status: int, port: str = "api", **kwargs: Any) -> Bad:
    return Bad(method, path, status, kwargs, port)


def raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": JSON}


@dataclass
class Live:
    url: str
    cp_url: str
    file: Path
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(app_dir: Path) -> AsyncIterator[Live]:
    cp_port = free_port()
    file = app_dir / "deployment.yml"
    file.write_text(DEPLOYMENT_YML.format(cp_port=cp_port))
    stop = asyncio.Event()
    url, task = await start_server(stop, deployment_files=[file])
    server = Live(url, f"http://127.0.0.1:{cp_port}", file, stop, task)
    try:
        yield server
    finally:
        server.stop.set()
        await asyncio.wait_for(server.task, timeout=60)


def corpus(task_id: str, session_id: str, app_dir: Path) -> list[Bad]:
    t, s = f"{D}/tasks/{task_id}", f"/sessions/{session_id}"
    yml = b"name: x\nservices:\n  s:\n    path: flows:echo_workflow\n"
    base = {"base_path": str(app_dir)}
    return [
        # --- server and routing
        bad("GET", "/no/such/route", 404),
        bad("DELETE", "/status/", 405),
        bad("POST", "/healthz", 405),
        bad("GET", "/status/", 400, headers={"host": "evil.example"}),
        bad("GET", "/status/", 403, headers={"origin": "https://evil.example"}),
        # --- deployments
        bad("POST", "/deployments/create", 400, params={"reload": "maybe"}),
        bad("POST", "/deployments/create", 400, params={"local": "2"}),
        bad("POST", "/deployments/create", 415, params=base, content=yml),
        bad(
            "POST",
            "/deployments/create",
            415,
            params=base,
            content=yml,
            headers={"content-type": "text/plain"},
        ),
        bad("POST", "/deployments/create", 403, params={"base_path": "/"}, files={"config_file": yml}),
        bad(
            "POST",
            "/deployments/create",
            400,
            params={"base_path": f"{app_dir}\0"},
            files={"config_file": yml},
        ),
        bad(
            "POST",
            "/deployments/create",
            400,
            params={"base_path": str(app_dir / "nope")},
            files={"config_file": yml},
        ),
        bad("POST", "/deployments/create", 400, params=base, files={"other": yml}),
        bad("POST", "/deployments/create", 400, params=base, files={"config_file": b""}),
        bad("POST", "/deployments/create", 400, params=base, files={"config_file": b"\xff\xfe"}),
        bad("POST", "/deployments/create", 400, params=base, files={"config_file": b"- a list\n"}),
        bad("POST", "/deployments/create", 400, params=base, files={"config_file": b"name: [unclosed\n"}),
        bad("POST", "/deployments/create", 400, params=base, files={"config_file": b"a: &x [*x]\n" + yml}),
        bad(
            "POST",
            "/deployments/create",
            400,
            params=base,
            files={"config_file": yml.replace(b"x\n", b"../x\n", 1)},
        ),
        bad(
            "POST",
            "/deployments/create",
            413,
            params=base,
            content=b"#" * (5 * 1024 * 1024),
            headers={"content-type": "application/yaml"},
        ),
        bad("GET", "/deployments/nope", 404),
        bad("GET", "/deployments/a%20b", 400),
        bad("GET", f"/deployments/{'d' * 200}", 400),
        bad("DELETE", "/deployments/nope", 404),
        bad("DELETE", "/deployments/a%00b", 400),
        bad("GET", "/deployments/nope/services", 404),
        bad("GET", "/deployments/nope/state", 404),
        bad("GET", "/deployments/nope/changes", 404),
        bad("GET", f"{D}/changes", 400, params={"from_seq": "-1"}),
        bad("GET", f"{D}/changes", 400, params={"from_seq": "nan"}),
        bad("GET", f"{D}/changes", 400, params={"from_seq": str(10**25)}),
        bad("GET", f"{D}/changes", 400, headers={"last-event-id": str(10**25)}),
        bad("GET", f"{D}/changes", 400, headers={"last-event-id": "abc"}),
        # --- tasks: run and create
        bad("POST", f"{D}/tasks/run", 422, json={}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": 5}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": None}),
        bad("POST", f"{D}/tasks/run", 422, json=[]),
        bad("POST", f"{D}/tasks/run", 422, json="input"),
        bad("POST", f"{D}/tasks/run", 400, json={"input": "[1]"}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": "not json"}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": '{"a": ' + DEEP + "}"}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": '{"a": NaN}'}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": '{"a": 1e999}'}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": '{"a": "\\ud800"}'}),
        bad("POST", f"{D}/tasks/run", 400, **raw(b'{"input": "\\ud800"}')),
        bad("POST", f"{D}/tasks/run", 400, **raw(b'{"input": "\xff"}')),
        bad("POST", f"{D}/tasks/run", 400, **raw(b'{"input": "{}", "x": ' + DEEP.encode() + b"}")),
        bad("POST", f"{D}/tasks/run", 400, **raw(b"")),
        bad(
            "POST", f"{D}/tasks/run", 415, content=b'{"input": "{}"}', headers={"content-type": "text/plain"}
        ),
        bad("POST", f"{D}/tasks/run", 422, json={"input": "{}", "task_id": "../x"}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": "{}", "task_id": "a\0b"}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": "{}", "task_id": "t" * 100_000}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": "{}", "session_id": "a b"}),
        bad("POST", f"{D}/tasks/run", 422, json={"input": "{}", "service_id": 5}),
        bad("POST", f"{D}/tasks/run", 404, json={"input": "{}", "service_id": "nope"}),
        bad("POST", f"{D}/tasks/run", 404, json={"input": "{}", "session_id": "nope"}),
        bad("POST", f"{D}/tasks/run", 400, json={"input": "{}"}, params={"session_id": "../x"}),
        bad("POST", f"{D}/tasks/create", 422, json={}),
        bad("POST", f"{D}/tasks/create", 409, json={"input": "{}", "task_id": task_id}),
        bad("POST", "/deployments/nope/tasks/create", 404, json={"input": "{}"}),
        # --- tasks: reads, cancel, events, results
        bad("GET", f"{D}/tasks", 400, params={"status": "bogus"}),
        bad("GET", f"{D}/tasks", 400, params={"session_id": "a\0"}),
        bad("GET", f"{D}/tasks/nope", 404),
        bad("GET", f"{D}/tasks/{LONG_ID}", 400),
        bad("GET", f"{D}/tasks/a%20b", 400),
        bad("POST", f"{D}/tasks/nope/cancel", 404),
        bad("POST", f"{D}/tasks/a%00b/cancel", 400),
        bad("POST", f"{t}/cancel", 409),
        bad("GET", f"{D}/tasks/nope/events", 404),
        bad("GET", f"{t}/events", 400, params={"from_seq": "abc"}),
        bad("GET", f"{t}/events", 400, params={"from_seq": "1e3"}),
        bad("GET", f"{t}/events", 400, params={"raw_event": "maybe"}),
        bad("GET", f"{t}/events", 400, params={"session_id": "a b"}),
        bad("GET", f"{t}/events", 400, headers={"accept": "text/event-stream", "last-event-id": str(10**25)}),
        bad("POST", f"{t}/events", 422, json={}),
        bad("POST", f"{t}/events", 422, json={"service_id": "a b", "event_obj_str": "{}"}),
        bad("POST", f"{t}/events", 400, json={"service_id": "hitl", "event_obj_str": "nope"}),
        bad("POST", f"{t}/events", 400, json={"service_id": "hitl", "event_obj_str": DEEP}),
        bad("POST", f"{t}/events", 415, content=b"{}", headers={"content-type": "text/plain"}),
        bad("POST", f"{D}/tasks/nope/events", 404, json={"service_id": "hitl", "event_obj_str": "{}"}),
        bad("POST", f"{D}/tasks/a%20b/events", 400, json={"service_id": "hitl", "event_obj_str": "{}"}),
        bad("GET", f"{t}/results", 400, params={"timeout": "nan"}),
        bad("GET", f"{t}/results", 400, params={"timeout": "inf"}),
        bad("GET", f"{t}/results", 400, params={"timeout": "-1"}),
        bad("GET", f"{t}/results", 400, params={"timeout": "1e400"}),
        bad("GET", f"{t}/results", 400, params={"timeout": "soon"}),
        bad("GET", f"{D}/tasks/nope/results", 404),
        # --- sessions
        bad("GET", f"{D}/sessions/nope", 404),
        bad("GET", f"{D}/sessions/a%20b", 400),
        bad("DELETE", f"{D}/sessions/nope", 404),
        bad("POST", f"{D}/sessions/delete", 400),
        bad("POST", f"{D}/sessions/delete", 400, params={"session_id": "../x"}),
        bad("POST", f"{D}/sessions/delete", 404, params={"session_id": "nope"}),
        bad("POST", "/deployments/nope/sessions/create", 404),
        # --- the control-plane port
        bad("GET", "/services/nope", 404, "cp"),
        bad("GET", "/services/a%20b", 400, "cp"),
        bad("POST", "/services/register", 422, "cp", json={}),
        bad("POST", "/services/register", 422, "cp", json={"service_name": "s", "port": "x"}),
        bad("POST", "/services/register", 422, "cp", json={"service_name": "a b"}),
        bad("POST", "/services/register", 415, "cp", content=b"{}", headers={"content-type": "text/plain"}),
        bad("POST", "/services/deregister", 400, "cp"),
        bad("POST", "/services/deregister", 400, "cp", params={"service_name": "a\0"}),
        bad("GET", "/sessions/nope", 404, "cp"),
        bad("GET", "/sessions/a%20b", 400, "cp"),
        bad("POST", "/sessions/nope/delete", 404, "cp"),
        bad("POST", "/sessions/nope/tasks", 404, "cp", json={"input": "{}"}),
        bad("POST", f"{s}/tasks", 422, "cp", json={}),
        bad("POST", f"{s}/tasks", 400, "cp", json={"input": DEEP}),
        bad(
            "POST",
            f"{s}/tasks",
            415,
            "cp",
            content=b'{"input": "{}"}',
            headers={"content-type": "text/plain"},
        ),
        bad("GET", "/sessions/nope/tasks", 404, "cp"),
        bad("GET", "/sessions/nope/current_task", 404, "cp"),
        bad("GET", f"{s}/tasks/nope/result", 404, "cp"),
        bad("GET", f"{s}/tasks/a%20b/result", 400, "cp"),
        bad("GET", f"{s}/tasks/nope/result_stream", 404, "cp"),
        bad(
            "POST",
            f"{s}/tasks/nope/send_event",
            404,
            "cp",
            json={"service_id": "hitl", "event_obj_str": "{}"},
        ),
        bad("POST", f"{s}/tasks/{task_id}/send_event", 422, "cp", json={"event_obj_str": "{}"}),
        bad("GET", "/sessions/nope/state", 404, "cp"),
        bad("POST", f"{s}/state", 400, "cp", json=[1]),
        bad("POST", f"{s}/state", 400, "cp", **raw(b"{")),
        bad("POST", f"{s}/state", 415, "cp", content=b"{}", headers={"content-type": "text/plain"}),
        bad("GET", "/sessions", 400, "cp", headers={"host": "evil.example:8000"}),
    ]


async def test_every_bad_request_is_a_4xx_with_a_json_detail(live: Live, app_dir: Path) -> None:
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=60) as api,
        httpx.AsyncClient(base_url=live.cp_url, timeout=60) as cp,
    ):
        done = await api.post(f"{D}/tasks/create", json={"input": task_input(message="x")})
        task_id, session_id = done.json()["task_id"], done.json()["session_id"]
        await api.get(f"{D}/tasks/{task_id}/results")
        cases = corpus(task_id, session_id, app_dir)
        assert len(cases) >= 60
        wrong: list[str] = []
        for case in cases:
            client = api if case.port == "api" else cp
            response = await client.request(case.method, case.path, **case.kwargs)
            try:
                detail = response.json()["detail"]
            except (ValueError, KeyError, TypeError):
                detail = None
            if response.status_code != case.status or not detail:
                wrong.append(
                    f"{case.method} {case.port}{case.path[:80]}: {response.status_code} {response.text[:200]}"
                )
    assert not wrong, "\n".join(wrong)


async def test_after_the_corpus_the_server_still_runs_a_task(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as api:
        response = await api.post(f"{D}/tasks/run", json={"input": task_input(message="still here")})
    assert response.json() == "Message received: still here"


async def test_after_the_corpus_the_server_restarts_cleanly(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as api:
        before = (await api.post(f"{D}/tasks/run", json={"input": task_input(message="before")})).status_code
        tasks = {t["task_id"] for t in (await api.get(f"{D}/tasks")).json()}
    assert before == 200
    live.stop.set()
    await asyncio.wait_for(live.task, timeout=60)
    live.stop = asyncio.Event()
    live.url, live.task = await start_server(live.stop, deployment_files=[live.file])
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as api:
        kept = {t["task_id"] for t in (await api.get(f"{D}/tasks")).json()}
        after = await api.post(f"{D}/tasks/run", json={"input": task_input(message="after")})
    assert tasks <= kept
    assert after.json() == "Message received: after"
    assert json.loads(json.dumps(after.json())) == "Message received: after"
