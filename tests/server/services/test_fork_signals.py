"""A process forked from a worker stops on SIGTERM even when the signal comes before the child
has put the default handling back (a child the machine was slow to schedule, as a fork pool's
``terminate`` right after a quick ``map`` meets it under load): before, the child took it with
the worker's handlers, lost it, and lived on, and the pool's ``join`` blocked the worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# The parent handles SIGTERM as the worker's event loop does (a handler that does nothing, the
# signal written to a wakeup socket). An at-fork hook registered before the worker's own keeps
# the child from reaching it for a while; the parent sends SIGTERM meanwhile.
SCRIPT = """
import os, signal, socket, sys, time

os.register_at_fork(after_in_child=lambda: time.sleep(0.5))  # runs before the worker's hook

from llamactl.server.services.process import _register_fork_hook

ours, theirs = socket.socketpair()
ours.setblocking(False)
signal.set_wakeup_fd(ours.fileno())
signal.signal(signal.SIGTERM, lambda *_: None)
_register_fork_hook()

pid = os.fork()
if pid == 0:
    time.sleep(3)  # a pool worker waiting for work; it must not get this far
    os._exit(3)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
print(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)  # the parent's handling is its own
"""


def test_a_sigterm_before_the_child_s_own_handling_still_stops_the_child() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    code, parent_kept = done.stdout.split()
    assert code == "-15", f"the child lived on after SIGTERM and exited with {code} (before: 3)"
    assert parent_kept == "True"
