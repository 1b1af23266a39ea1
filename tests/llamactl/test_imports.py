"""`llamactl --help` (and each command's) must stay fast: no heavy module at import time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.llamactl.serving import REPO

# pydantic is not listed: typer 0.29 itself loads it to coerce some parameter types (Path).
HEAVY = ("httpx", "uvicorn", "starlette", "zmq", "textual", "workflows", "watchfiles", "rich")
HEAVY_OF_OURS = ("llamactl.server", "llamactl.tui")

# Runs the CLI in-process as `python -m llamactl ARGS` would, then reports what got imported.
PROBE = """
import json, sys
sys.argv = ["llamactl", *json.loads(sys.argv[1])]
from llamactl.cli.main import app
code = 0
try:
    app()
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

COMMANDS = [
    [],
    ["--help"],
    ["tasks", "--help"],
    ["tasks", "list", "--help"],
    ["tasks", "cancel", "--help"],
    ["--version"],
    ["serve", "--help"],
    ["worker", "--help"],
    ["run", "--help"],
    ["deploy", "--help"],
    ["status", "--help"],
    ["deployments", "show", "--help"],
    ["sessions", "--help"],
    ["tasks", "events", "--help"],
    ["tasks", "send-event", "--help"],
    ["init", "--help"],
    ["validate", "--help"],
    ["tui", "--help"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "(none)")
def test_help_imports_no_heavy_module(args: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], cwd=REPO, capture_output=True, text=True, check=False
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, 2), probe.stderr
    heavy = sorted(m for m in report["modules"] if m.split(".")[0] in HEAVY or m.startswith(HEAVY_OF_OURS))
    assert heavy == [], f"`llamactl {' '.join(args)}` imported {heavy}"
    assert "Usage" in probe.stdout + probe.stderr or "llamactl" in probe.stdout


HELP_RATIO = 3.0
"""How many times the start of a bare typer program `llamactl --help` may take. Issue #13 asked
for < 0.25 s on this project's machine (printed for the record); a test asserts a ratio to a
baseline of the same run instead, since the machine's speed varies by a factor of three."""
BASELINE = "import typer; typer.Typer()"


def _best_of(runs: int, *argvs: list[str]) -> list[tuple[float, float]]:
    """(best, median) seconds of each command, run in turns so they share the machine's load."""
    times: list[list[float]] = [[] for _ in argvs]
    for _ in range(runs):
        for i, argv in enumerate(argvs):
            start = time.perf_counter()
            subprocess.run(argv, cwd=REPO, capture_output=True, check=True)
            times[i].append(time.perf_counter() - start)
    return [(min(t), sorted(t)[len(t) // 2]) for t in times]


def test_help_takes_at_most_three_times_a_bare_typer_program() -> None:
    """The best of 9 runs of `python -m llamactl --help` against the best of 9 of a Python that
    only imports typer, the interpreter's start included in both: the best run is what the code
    costs; the others add what the machine's other load took (medians printed for the record).
    A heavy import at the CLI's start (httpx, starlette, ...) costs about as much as typer itself."""
    (help_best, help_median), (base_best, base_median) = _best_of(
        9, [sys.executable, "-m", "llamactl", "--help"], [sys.executable, "-c", BASELINE]
    )
    ratio = help_best / base_best
    print(
        f"\nllamactl --help: best {help_best * 1000:.0f} ms, median {help_median * 1000:.0f} ms; "
        f"typer alone: best {base_best * 1000:.0f} ms, median {base_median * 1000:.0f} ms; ratio {ratio:.2f}"
    )
    assert ratio < HELP_RATIO, f"llamactl --help took {ratio:.2f}x a bare typer program ({help_best:.3f}s)"


def test_help_shows_no_bogus_types_for_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llamactl", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "<bool>" not in out
    assert "--version" in out and "--server" in out and "LLAMACTL_SERVER" in out


def test_our_engine_never_imports_top_level_server_or_tui_modules() -> None:
    """Those names belong to users: a worker imports a user's ``server.py`` as ``server``."""
    probe = (
        "import sys, llamactl.cli.main, llamactl.server.apiserver, llamactl.server.services.process, "
        "llamactl.server.services.__main__, llamactl.tui; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('server', 'tui')))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe], cwd="/", capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
