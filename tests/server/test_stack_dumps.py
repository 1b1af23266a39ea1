"""SIGUSR2 makes a process that called print_stacks_on_signal print where its threads are."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamactl.server.stack_dumps import STACKS_SIGNAL
from tests.e2e.waiting import wait_until_blocking

REPO_ROOT = Path(__file__).resolve().parents[2]

STUCK = """
    import re, sys, time
    from llamactl.server.stack_dumps import print_stacks_on_signal

    def stuck_in_a_sleep():
        print("stuck", flush=True)
        time.sleep(3600)

    def stuck_in_c_holding_the_gil():
        print("stuck", flush=True)
        re.match(r"(a+)+$", "a" * 64 + "b")  # backtracks for ages, in C, with the GIL held

    print_stacks_on_signal()
    {call}()
"""


@pytest.mark.parametrize("call", ["stuck_in_a_sleep", "stuck_in_c_holding_the_gil"])
def test_the_signal_prints_the_stack_where_the_process_is_stuck(tmp_path: Path, call: str) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent(STUCK.format(call=call)))
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], stdout=stdout, stderr=stderr, cwd=REPO_ROOT)
    try:
        wait_until_blocking(lambda: "stuck" in out.read_text(), 30, "the process to get stuck")
        process.send_signal(STACKS_SIGNAL)
        wait_until_blocking(lambda: f"in {call}" in err.read_text(), 10, "its stack on stderr")
        assert 'stuck.py", line' in err.read_text()
        assert process.poll() is None  # it prints and runs on
    finally:
        process.kill()
        process.wait()
