"""A worker process starts with what a worker needs: every replica pays its imports at each
start and each hot reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SERVER_ONLY = (
    "llamactl.server.mq.zeromq.broker",
    "llamactl.server.mq.zeromq.journal",
    "llamactl.server.mq.zeromq.journal_tables",
    "llamactl.server.mq.zeromq.dispatch",
    "llamactl.server.mq.zeromq.subscriptions",
    "llamactl.server.mq.zeromq.work_topics",
    "llamactl.server.mq.zeromq.unix_listener",
)


def test_a_worker_imports_the_queue_client_but_not_the_broker() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, llamactl.server.services.__main__; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    assert "llamactl.server.mq.zeromq.client" in modules
    assert sorted(modules.intersection(SERVER_ONLY)) == []
