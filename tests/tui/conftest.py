"""A real `llamactl serve` for the dashboard's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llamactl.serving import Server, write_app


@pytest.fixture(scope="session")
def tui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server running two deployments: `demo` (every test service) and `other` (echo only)."""
    folder = tmp_path_factory.mktemp("tui")
    demo = write_app(folder / "demo", "demo")
    other = write_app(folder / "other", "other", {"echo": "flows:echo_workflow"})
    server = Server(demo, other)
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.rest())
