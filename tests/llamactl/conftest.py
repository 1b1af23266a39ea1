"""Fixtures: a real `llamactl serve` with the demo deployment, shared by the modules that need one."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.llamactl.serving import Server, write_app


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server running the `demo` deployment (services: see serving.SERVICES; default `echo`)."""
    server = Server(write_app(tmp_path_factory.mktemp("demo"), "demo"))
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.rest())


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, and kept bound for the
    whole test, so that no other test's server can take it meanwhile (one closed at once was
    taken by a parallel test's server, whose HTTP 400 then reached the client under test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
