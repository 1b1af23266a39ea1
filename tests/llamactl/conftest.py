"""Fixtures: a real `llamactl serve` with the demo deployment, shared by the modules that need one."""

from __future__ import annotations

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
