"""The real `llamactl tui` command in a real terminal (tmux): it draws, takes keys, runs a task and shows
its result and events. `.ci/run` installs tmux (Debian package `tmux`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.llamactl.serving import REPO, Server

TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed: apt-get install tmux (.ci/run does)"
)


class Terminal:
    """A detached tmux session on a private tmux server, running one command."""

    def __init__(self, command: list[str], size: tuple[int, int] = (120, 36)) -> None:
        assert TMUX is not None
        self.socket = f"llamactl-test-{os.getpid()}"
        self.session = "dashboard"
        env = {**os.environ, "LANG": "C.UTF-8", "TERM": "xterm-256color"}
        self._tmux(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(size[0]),
            "-y",
            str(size[1]),
            " ".join(command),
            env=env,
        )

    def _tmux(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-u", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            cwd=REPO,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._tmux("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the screen never showed {what} within {timeout:.0f}s; it shows:\n{screen}"
                )
            time.sleep(0.1)

    def alive(self) -> bool:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-L", self.socket, "has-session", "-t", self.session], capture_output=True, check=False
        )
        return done.returncode == 0

    def close(self) -> None:
        self._tmux("kill-server", check=False)


@pytest.fixture
def terminal(tui_server: Server) -> Iterator[Terminal]:
    shell = [sys.executable, "-m", "llamactl", "--server", tui_server.url, "tui", "-d", "demo"]
    term = Terminal(shell)
    try:
        yield term
    finally:
        term.close()


def test_a_task_run_from_the_dashboard_shows_its_result_and_events(terminal: Terminal) -> None:
    terminal.wait_for(lambda s: "live" in s and "Services" in s and "echo" in s, "the dashboard, live")
    terminal.keys("r")
    terminal.wait_for(lambda s: "Run a task" in s, "the run form")
    terminal.keys("hello from tmux", literal=True)
    terminal.keys("Enter")
    screen = terminal.wait_for(lambda s: "Message received: hello from tmux" in s, "the task's result")
    assert "StopEvent" in screen, screen
    assert "completed" in screen, screen
    terminal.keys("q")
    deadline = time.monotonic() + 15
    while terminal.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not terminal.alive(), "q did not quit the dashboard"
