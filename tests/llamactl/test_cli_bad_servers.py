"""Issue #13, point 1: no traceback for an ordinary mistake about the server, ever.

Every command that talks to a server is run against each way of getting the server wrong: a
closed port named without a scheme, a port where something that is not HTTP answers (a database),
another HTTP server (its HTML 404 pages, or a page for every path), and a llamactl server that is
stopping. Each must give exactly one `Error:` line, one `Hint:` line and its exit code.
"""

from __future__ import annotations

import signal
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from llamactl.client import Client
from llamactl.client._base import server_url
from llamactl.client.errors import InvalidServerUrl
from tests.llamactl.fakes import FakeServer
from tests.llamactl.serving import Server, write_app

runner = CliRunner()


def commands(deployment_file: Path) -> list[list[str]]:
    """Every command that talks to a server, with the arguments it needs."""
    return [
        ["status"],
        ["deploy", str(deployment_file)],
        ["deployments", "list"],
        ["deployments", "show", "demo"],
        ["deployments", "delete", "demo"],
        ["run", "hi"],
        ["run", "-d", "demo", "hi"],
        ["run", "-d", "demo", "--stream", "hi"],
        ["sessions", "list"],
        ["sessions", "create", "-d", "demo"],
        ["sessions", "show", "s1", "-d", "demo"],
        ["sessions", "delete", "s1", "-d", "demo"],
        ["tasks", "list"],
        ["tasks", "list", "-d", "demo"],
        ["tasks", "show", "t1", "-d", "demo"],
        ["tasks", "events", "t1", "-d", "demo"],
        ["tasks", "events", "t1", "-d", "demo", "--follow"],
        ["tasks", "cancel", "t1", "-d", "demo"],
        ["tasks", "send-event", "t1", "-d", "demo", "--json", '{"response": "x"}'],
    ]


def invoke(server: str, args: list[str]) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--server", server, *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, expected: ExitCode, needle: str) -> None:
    # before the request, a progress line may say what is being tried
    lines = [line for line in err.splitlines() if not line.startswith(("Deploying ", "Stopping "))]
    assert (code, out) == (expected, ""), err
    assert "Traceback" not in err
    assert len(lines) == 2, err
    assert lines[0].startswith("Error: ") and needle in lines[0], err
    assert lines[1].startswith("Hint: "), err


@pytest.fixture(scope="module")
def deployment_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), "demo", {"echo": "flows:echo_workflow"})


class _NotHttp(socketserver.BaseRequestHandler):
    """Answers like Redis does to anything it cannot parse."""

    def handle(self) -> None:
        self.request.recv(4096)
        self.request.sendall(b"-ERR unknown command 'GET', with args beginning with: \r\n")


class _HtmlPages(BaseHTTPRequestHandler):
    """Another web server: HTML for every request (404 pages, or a 200 page with ``always_ok``)."""

    always_ok = False

    def _page(self) -> None:
        status = 200 if self.always_ok else 404
        body = b"<!DOCTYPE html><html><body><h1>Not Found</h1><p>Nothing here.</p></body></html>\n" * 20
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._page()

    def do_DELETE(self) -> None:
        self._page()

    def log_message(self, format: str, *args: object) -> None:
        return


class _AlwaysOk(_HtmlPages):
    always_ok = True


def _serve_in_thread(server: socketserver.BaseServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def not_http() -> Iterator[str]:
    yield from _serve_in_thread(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NotHttp))


@pytest.fixture(scope="module")
def html_404() -> Iterator[str]:
    yield from _serve_in_thread(ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPages))


@pytest.fixture(scope="module")
def html_200() -> Iterator[str]:
    yield from _serve_in_thread(ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysOk))


INDEXES = list(range(19))


def _args(deployment_file: Path, index: int) -> list[str]:
    return commands(deployment_file)[index]


def _ids(index: int) -> str:
    return " ".join(commands(Path("deployment.yml"))[index])


@pytest.mark.parametrize("index", INDEXES, ids=_ids)
def test_a_closed_port_without_a_scheme_is_unreachable(
    deployment_file: Path, closed_port: int, index: int
) -> None:
    code, out, err = invoke(f"127.0.0.1:{closed_port}", _args(deployment_file, index))
    needle = f"no server answers at http://127.0.0.1:{closed_port} (connection refused)"
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, needle)


@pytest.mark.parametrize("index", INDEXES, ids=_ids)
def test_something_that_is_not_http_is_not_a_llamactl_server(
    deployment_file: Path, not_http: str, index: int
) -> None:
    code, out, err = invoke(not_http, _args(deployment_file, index))
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, f"http://{not_http} is not a llamactl server")
    assert "does not answer HTTP" in err


@pytest.mark.parametrize("index", INDEXES, ids=_ids)
def test_another_web_server_is_not_a_llamactl_server(
    deployment_file: Path, html_404: str, index: int
) -> None:
    code, out, err = invoke(f"http://{html_404}", _args(deployment_file, index))
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, f"http://{html_404} is not a llamactl server")
    assert "an HTML page" in err
    assert "<html" not in err.lower()
    assert "deployments list" not in err


@pytest.mark.parametrize("index", INDEXES, ids=_ids)
def test_a_web_server_that_answers_every_path_is_not_a_llamactl_server(
    deployment_file: Path, html_200: str, index: int
) -> None:
    code, out, err = invoke(f"http://{html_200}", _args(deployment_file, index))
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, f"http://{html_200} is not a llamactl server")


@pytest.fixture(scope="module")
def stopping_server(deployment_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server draining: a 60 s task keeps it in its shutdown drain while the tests run."""
    folder = tmp_path_factory.mktemp("stopping")
    server = Server(write_app(folder, "demo", {"echo": "flows:echo_workflow", "slow": "funcs:slow"}))
    try:
        with Client(server.url) as client:
            tasks = client.deployment("demo").tasks
            slow = tasks.create({"seconds": 60}, service="slow")
            for _ in tasks.events(slow.task_id, follow=False):
                pass
            assert tasks.result(slow.task_id, timeout=0.5) is None  # still running
            server.note_workers()
        server.process.send_signal(signal.SIGINT)
        server.stderr.wait_for(lambda line: "waiting for 1 running task" in line, 30)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGINT)  # the second Ctrl-C: stop at once
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        server.stderr.rest()
        assert server.process.stderr is not None
        server.process.stderr.close()


@pytest.mark.parametrize("index", INDEXES, ids=_ids)
def test_a_stopping_server_says_it_is_stopping(
    stopping_server: Server, deployment_file: Path, index: int
) -> None:
    code, out, err = invoke(stopping_server.url, _args(deployment_file, index))
    needle = f"the server at {stopping_server.url} is stopping"
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, needle)
    assert "start a server" not in err


def test_a_url_without_a_scheme_reaches_a_real_server(stopping_server: Server) -> None:
    # (a draining server still answers: that it is stopping is the proof the URL was understood)
    code, _, err = invoke(stopping_server.url.removeprefix("http://"), ["status"])
    assert code == ExitCode.UNREACHABLE and "is stopping" in err


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("127.0.0.1:4501", "http://127.0.0.1:4501"),
        ("localhost:4501/", "http://localhost:4501"),
        ("https://example.test", "https://example.test"),
        ("[::1]:4501", "http://[::1]:4501"),
    ],
)
def test_server_urls_get_a_scheme_when_they_have_none(given: str, used: str) -> None:
    assert server_url(given) == used


@pytest.mark.parametrize("given", ["ftp://x", "http://", "127.0.0.1:port", "http://:80"])
def test_a_url_that_is_no_server_url_is_a_usage_error(given: str) -> None:
    with pytest.raises(InvalidServerUrl):
        server_url(given)
    code, out, err = invoke(given, ["status"])
    assert (code, out) == (ExitCode.USAGE, "")
    assert err.startswith("Error: ") and len(err.splitlines()) == 1


# --- the server's own refusals of a wait ------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)
    server = FakeServer()
    server.on("GET", "/deployments/", [{"name": "demo"}])
    server.install(monkeypatch)
    return server


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_a_wait_that_timed_out_says_the_task_goes_on(fake: FakeServer) -> None:
    body = {"detail": "Task 't1' is still running after 360 s: ...", "task_id": "t1", "status": "running"}
    fake.on("POST", "/deployments/demo/tasks/run", body, status=504)
    code, out, err = _cli("run", "hi")
    assert_one_line_error(code, out, err, ExitCode.STILL_RUNNING, "task t1 is still running")
    assert "Hint: it goes on: follow it with `llamactl tasks events t1 -d demo --follow`" in err


def test_a_full_queue_says_when_to_try_again(fake: FakeServer) -> None:
    answer = httpx.Response(
        429, json={"detail": "Service 'echo' has 10 tasks waiting"}, headers={"Retry-After": "3"}
    )
    fake.on("POST", "/deployments/demo/tasks/run", answer)
    code, out, err = _cli("run", "hi")
    assert_one_line_error(code, out, err, ExitCode.BUSY, "Service 'echo' has 10 tasks waiting")
    assert "Hint: try again in 3 s" in err


def test_a_waiter_woken_by_a_stopping_server_names_its_task(fake: FakeServer) -> None:
    body = {"detail": "the server is stopping", "task_id": "t1", "status": "running"}
    fake.on("POST", "/deployments/demo/tasks/run", body, status=503)
    code, out, err = _cli("run", "hi")
    assert_one_line_error(code, out, err, ExitCode.UNREACHABLE, "is stopping; task t1 is running")
    assert "Hint: it goes on when the server is back: `llamactl tasks show t1 -d demo`" in err
