"""`llamactl tui` and `python -m llamactl.tui` from the command line."""

from __future__ import annotations

import subprocess
import sys

from tests.llamactl.serving import REPO


def test_the_dashboard_refuses_to_start_without_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llamactl", "tui"],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    assert "needs a terminal" in done.stderr and "Hint:" in done.stderr


def test_python_dash_m_llamactl_tui_has_the_same_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llamactl.tui", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for option in ("--server", "--token", "--deployment", "--max-tasks", "--max-events", "--theme"):
        assert option in done.stdout, option
