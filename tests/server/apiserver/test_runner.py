"""serve(): the token rule, bearer auth, ports; and the small pieces under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from llamactl.server.apiserver.listen import bind_sockets, is_loopback, url_for
from llamactl.server.apiserver.multipart import read_form_file
from llamactl.server.apiserver.runner import serve
from llamactl.server.apiserver.streams import with_keepalive
from llamactl.server.errors import InvalidRequest
from tests.llamactl.serving import write_app
from tests.server.apiserver.conftest import free_port, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "s3cret-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured() -> AsyncIterator[str]:
    stop = asyncio.Event()
    url, task = await start_server(stop, token=TOKEN)
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_a_token_is_required_beyond_loopback() -> None:
    with pytest.raises(InvalidRequest, match="LLAMACTL_API_TOKEN"):
        await serve(host="0.0.0.0", port=0)


async def test_healthz_needs_no_token(secured: str) -> None:
    async with httpx.AsyncClient(base_url=secured) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("header", "status", "needle"),
    [
        (None, 401, "bearer token is required"),
        ("Bearer wrong", 401, "token is wrong"),
        ("Basic czNjcmV0", 401, "token is wrong"),
        (f"Bearer {TOKEN}", 200, None),
    ],
)
async def test_every_other_route_needs_the_bearer_token(
    secured: str, header: str | None, status: int, needle: str | None
) -> None:
    headers = {"authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=secured, headers=headers) as client:
        response = await client.get("/status/")
    assert response.status_code == status
    if needle is not None:
        assert needle in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert response.json()["deployments"] == []


async def test_a_taken_port_is_a_clear_error(secured: str) -> None:
    port = int(secured.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="pick another --port"):
        await serve(port=port)


async def test_serve_stops_when_asked_and_frees_its_port() -> None:
    stop = asyncio.Event()
    url, task = await start_server(stop)
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/status/")).status_code == 200
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    for sock in bind_sockets("127.0.0.1", int(url.rsplit(":", 1)[1])):
        sock.close()


async def test_loopback_and_urls() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com") and not is_loopback("10.0.0.1")
    assert url_for("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert url_for("::", 81) == "http://[::1]:81"
    assert url_for("localhost", 82) == "http://localhost:82"


async def test_multipart_reads_the_named_part() -> None:
    body = (
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="other"\r\n\r\nnope\r\n'
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="config_file"; filename="upload"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"name: x\r\nservices: {}\r\n"
        b"--xyz--\r\n"
    )
    assert (
        read_form_file(body, "multipart/form-data; boundary=xyz", "config_file") == b"name: x\r\nservices: {}"
    )
    with pytest.raises(InvalidRequest, match="found other, config_file"):
        read_form_file(body, "multipart/form-data; boundary=xyz", "missing")
    with pytest.raises(InvalidRequest, match="multipart/form-data"):
        read_form_file(body, "application/json", "config_file")


async def test_keepalive_ticks_while_the_source_is_quiet_and_stop_ends_it() -> None:
    release = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 1
        await release.wait()
        yield 2

    stop = asyncio.Event()
    seen: list[int | None] = []
    async for item in with_keepalive(source(), 0.01, stop):
        seen.append(item)
        if seen.count(None) == 2:
            release.set()
        if item == 2:
            stop.set()
    assert seen[0] == 1 and seen[-1] == 2 and seen.count(None) >= 2

    forever = asyncio.Event()

    async def quiet() -> AsyncIterator[int]:
        await forever.wait()
        yield 0

    stop = asyncio.Event()
    stop.set()
    assert [item async for item in with_keepalive(quiet(), 10, stop)] == []


SLOW_IMPORT = """
import time

time.sleep(3)  # the worker takes this long to be ready: the deployment stays "starting"


async def greet(name: str = "world") -> str:
    return f"hello {name}"
"""


async def test_a_deployment_the_server_has_not_started_yet_answers_starting_not_unknown(
    tmp_path: Path,
) -> None:
    """Deployments from the command line are known before the port opens: a client of a restarted
    server (the dashboard resuming a task's events) hears 503 "starting", never 404, for a
    deployment that comes up in a moment, even one waiting behind a slow first deployment."""
    first = write_app(tmp_path / "first", "first", {"greet": "slowly:greet"})
    (tmp_path / "first" / "src" / "slowly.py").write_text(SLOW_IMPORT)
    second = write_app(tmp_path / "second", "second", {"greet": "funcs:greet"})
    port = free_port()
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(port=port, deployment_files=[first, second], stop=stop))
    answers: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = asyncio.get_running_loop().time() + 90
            while not answers or answers[-1] != 200:
                assert asyncio.get_running_loop().time() < deadline, f"never up: {answers}"
                assert not serving.done(), "serve() ended"
                try:
                    response = await client.get("/deployments/second/tasks")
                except httpx.TransportError:  # the port is not open yet
                    await asyncio.sleep(0.02)
                    continue
                answers.append(response.status_code)
                if response.status_code != 200:
                    assert response.status_code == 503, response.text
                    assert "starting" in response.json()["detail"], response.text
                    await asyncio.sleep(0.05)
        assert 503 in answers, "the port opened only once everything was up: nothing was checked"
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)
