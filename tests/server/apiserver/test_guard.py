"""No web page can drive the server: the attacks of issue #11, each refused, against a real server
(uvicorn on a loopback port, real workers), while clients on the same machine are still served."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from llamactl.client import AsyncClient
from tests.server.apiserver.conftest import OTHER_YML, Running, start_server, task_input

pytestmark = pytest.mark.asyncio(loop_scope="module")

D = "/deployments/main"
EVIL = "http://evil.example"
TOKEN = "tok-1f0e2d3c4b5a"
LIMIT = 64 * 1024


async def task_count(client: httpx.AsyncClient) -> int:
    return len((await client.get(f"{D}/tasks")).json())


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw_request(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read the answer until the server closes or 5 s of quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        return head
    finally:
        writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Path]]:
    """A server with no deployment, started with extra hosts and origins and a small body limit."""
    root = tmp_path_factory.mktemp("roots")
    stop = asyncio.Event()
    url, task = await start_server(
        stop,
        allowed_hosts=["myhost.test", "*.lan.test"],
        allowed_origins=["http://localhost:3000"],
        max_body_size=LIMIT,
        deployments_roots=[root],
    )
    try:
        yield url, root
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured() -> AsyncIterator[str]:
    stop = asyncio.Event()
    url, task = await start_server(stop, token=TOKEN)
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


# --- cross-origin posts a browser sends without a preflight ---------------------------------------


async def test_a_cross_origin_text_plain_post_to_tasks_run_is_refused_and_runs_nothing(
    client: httpx.AsyncClient,
) -> None:
    before = await task_count(client)
    response = await client.post(
        f"{D}/tasks/run",
        content=json.dumps({"input": task_input(message="pwned")}),
        headers={"content-type": "text/plain", "origin": EVIL},
    )
    assert response.status_code == 403
    assert "evil.example" in response.json()["detail"] and "--allow-origin" in response.json()["detail"]
    assert await task_count(client) == before


async def test_a_cross_origin_form_post_to_tasks_run_is_refused(client: httpx.AsyncClient) -> None:
    before = await task_count(client)
    response = await client.post(
        f"{D}/tasks/run", data={"input": task_input(message="pwned")}, headers={"origin": EVIL}
    )
    assert response.status_code == 403
    assert await task_count(client) == before


async def test_a_text_plain_post_without_origin_is_415_so_no_simple_request_reaches_a_json_route(
    client: httpx.AsyncClient,
) -> None:
    before = await task_count(client)
    response = await client.post(
        f"{D}/tasks/run",
        content=json.dumps({"input": task_input(message="x")}),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    form = await client.post(f"{D}/tasks/create", data={"input": "{}"})
    assert form.status_code == 415
    assert await task_count(client) == before


async def test_a_cross_origin_multipart_deploy_is_refused_and_deploys_nothing(
    client: httpx.AsyncClient, running: Running
) -> None:
    # multipart/form-data is a "simple" request: only the Origin check stands between a page and this.
    response = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        files={"config_file": ("upload", OTHER_YML.format(name="evil", path="flows:echo_workflow").encode())},
        headers={"origin": EVIL},
    )
    assert response.status_code == 403
    assert (await client.get("/deployments/evil")).status_code == 404


async def test_a_cross_origin_text_plain_deploy_is_refused(
    client: httpx.AsyncClient, running: Running
) -> None:
    response = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        content=OTHER_YML.format(name="evil2", path="flows:echo_workflow"),
        headers={"content-type": "text/plain", "origin": "null"},
    )
    assert response.status_code == 403
    assert (await client.get("/deployments/evil2")).status_code == 404


async def test_a_deploy_as_text_plain_without_origin_is_415(
    client: httpx.AsyncClient, running: Running
) -> None:
    response = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        content=OTHER_YML.format(name="plain", path="flows:echo_workflow"),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


# --- DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/status/"), ("POST", f"{D}/tasks/run"), ("POST", "/deployments/create"), ("GET", "/healthz")],
)
async def test_a_rebound_host_name_is_refused_on_every_kind_of_route(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    before = await task_count(client)
    response = await client.request(
        method, path, json={"input": task_input(message="x")}, headers={"host": "evil.example:4501"}
    )
    assert response.status_code == 400
    assert (
        "Invalid host header" in response.json()["detail"] and "--allowed-host" in response.json()["detail"]
    )
    assert await task_count(client) == before


async def test_a_rebound_host_name_is_refused_on_the_control_plane_port(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.cp_url) as cp:
        refused = await cp.post("/sessions/create", headers={"host": "evil.example:8000"})
        assert refused.status_code == 400 and "Invalid host header" in refused.json()["detail"]
        cross = await cp.post("/sessions/create", headers={"origin": EVIL})
        assert cross.status_code == 403
        assert (await cp.get("/")).status_code == 200


@pytest.mark.parametrize("host", ["localhost:1", "LOCALHOST", "127.0.0.1", "127.0.0.2:9", "[::1]:4501"])
async def test_loopback_host_names_with_any_port_are_served(client: httpx.AsyncClient, host: str) -> None:
    assert (await client.get("/status/", headers={"host": host})).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1.evil.example", "localhost.evil.example", "2130706433", "[::1"])
async def test_names_that_only_look_like_loopback_are_refused(client: httpx.AsyncClient, host: str) -> None:
    assert (await client.get("/status/", headers={"host": host})).status_code == 400


async def test_a_request_without_host_is_refused(running: Running) -> None:
    head = await raw_request(port_of(running.url), b"GET /status/ HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")


# --- what is still served ------------------------------------------------------------------------


async def test_the_servers_own_origin_is_served(client: httpx.AsyncClient, running: Running) -> None:
    response = await client.post(
        f"{D}/tasks/run", json={"input": task_input(message="own page")}, headers={"origin": running.url}
    )
    assert response.status_code == 200 and response.json() == "Message received: own page"


async def test_same_machine_clients_are_served(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        ran = await http.post(f"{D}/tasks/run", json={"input": task_input(message="httpx")})
        assert ran.json() == "Message received: httpx"
    async with AsyncClient(running.url) as ours:
        assert "main" in ((await ours.status()).deployments or [])
        assert await ours.deployment("main").tasks.run({"message": "client"}) == "Message received: client"
    body = json.dumps({"input": task_input(message="curl")}).encode()
    head = await raw_request(
        port_of(running.url),
        b"POST /deployments/main/tasks/run HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.5.0\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert head.startswith(b"HTTP/1.1 200")


async def test_an_allowed_host_and_its_wildcard_are_served(open_server: tuple[str, Path]) -> None:
    url, _ = open_server
    async with httpx.AsyncClient(base_url=url) as http:
        for host in ("myhost.test", "MyHost.test:4501", "a.lan.test", "b.a.lan.test:1"):
            assert (await http.get("/status/", headers={"host": host})).status_code == 200, host
        for host in ("lan.test", "myhost.test.evil", "evil.example"):
            assert (await http.get("/status/", headers={"host": host})).status_code == 400, host


async def test_an_allowed_origin_is_served_with_cors_headers_and_others_are_not(
    open_server: tuple[str, Path],
) -> None:
    url, _ = open_server
    async with httpx.AsyncClient(base_url=url) as http:
        allowed = await http.get("/status/", headers={"origin": "http://localhost:3000"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        preflight = await http.options(
            "/deployments/x/tasks/run",
            headers={
                "origin": "http://localhost:3000",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = await http.get("/status/", headers={"origin": "http://localhost:3001"})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


# --- body size -----------------------------------------------------------------------------------


async def test_a_declared_oversize_body_is_413_before_it_is_read(open_server: tuple[str, Path]) -> None:
    url, _ = open_server
    head = await raw_request(
        port_of(url),
        b"POST /deployments/x/tasks/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 209715200\r\n\r\n{",
    )
    assert head.startswith(b"HTTP/1.1 413")


async def test_a_streamed_oversize_body_is_413_without_reading_it_all(open_server: tuple[str, Path]) -> None:
    url, root = open_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(
        f"POST /deployments/create?base_path={root} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"Content-Type: application/yaml\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    chunk = b"#" * 65536
    sent, deadline = 0, time.monotonic() + 60
    try:
        while sent < 200 * 1024 * 1024 and not answer.done() and time.monotonic() < deadline:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, TimeoutError):
                break
            sent += len(chunk)
        head = await asyncio.wait_for(answer, 30)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert sent < 32 * 1024 * 1024, f"the server read {sent} bytes before refusing"


async def test_a_body_under_the_limit_is_read(open_server: tuple[str, Path]) -> None:
    url, _ = open_server
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/deployments/x/tasks/run", json={"input": "x" * (LIMIT // 2)})
    assert response.status_code == 404  # read and parsed; the deployment does not exist


# --- the token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_token_scheme_is_matched_case_insensitively(secured: str, scheme: str) -> None:
    async with httpx.AsyncClient(base_url=secured) as http:
        response = await http.get("/status/", headers={"authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "params", [{"token": TOKEN}, {"access_token": TOKEN}, {"authorization": f"Bearer {TOKEN}"}]
)
async def test_the_token_is_accepted_from_the_header_only(secured: str, params: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=secured, cookies={"token": TOKEN}) as http:
        response = await http.get("/status/", params=params)
    assert response.status_code == 401


async def test_the_token_is_never_logged(secured: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=secured) as http:
        await http.get("/status/", headers={"authorization": f"Bearer {TOKEN}"})
        await http.get("/status/", headers={"authorization": f"Bearer {TOKEN}x"})
        await http.post(
            "/deployments/x/tasks/run", headers={"authorization": f"bearer {TOKEN}"}, content=b"{"
        )
    assert caplog.records, "nothing was logged at all: the check below would prove nothing"
    assert TOKEN not in caplog.text
