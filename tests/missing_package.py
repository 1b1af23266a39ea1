"""What a user without an optional package meets: a snippet run in a fresh interpreter in which
that package cannot be imported.

A subprocess, not this process's ``sys.modules`` edited for the test: taking modules out while
another thread of the test process imported one of them broke CPython 3.11's import lock once (a
``KeyError`` in ``_ModuleLock.acquire``) and failed an unrelated run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["error_without"]

REPO = Path(__file__).resolve().parents[1]

_RUN = """
import json, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None  # what a missing package looks like to import
try:
    exec(sys.argv[2], {})
except Exception as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
else:
    print("null")
"""


def error_without(packages: Sequence[str], code: str) -> tuple[str, str]:
    """The type name and message of the exception ``code`` raises where none of ``packages`` can
    be imported (AssertionError when it raises none)."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(list(packages)), code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    raised = json.loads(done.stdout.strip().splitlines()[-1])
    assert raised is not None, f"no error without {', '.join(packages)}: {done.stderr}"
    name, message = raised
    return str(name), str(message)
