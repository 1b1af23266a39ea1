"""No process outlives its replica: close(), grandchildren, and a SIGKILLed supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable

import pytest

from llamactl.server.supervisor import RestartPolicy, Supervisor

from .helpers import REPO_ROOT, Recorder, ScriptFactory, WaitUntil

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")

SPAWNS_GRANDCHILD = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print("grandchild", child.pid, flush=True)
    if sys.argv[1:] == ["crash"]:
        sys.exit(1)
    time.sleep(120)
"""


async def test_close_leaves_no_process(
    rec: Recorder, script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    sup = Supervisor(on_event=rec.on_event, output=rec.output)
    ignores = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready")
        time.sleep(120)
    """
    await sup.start_replica("a", script("a", "import time; time.sleep(120)"))
    await sup.start_replica("b", script("b", ignores))
    await sup.start_replica("c", script("c", "import sys; sys.exit(1)"), RestartPolicy(initial_backoff=60))
    await waiter(lambda: "ready" in rec.printed("b"), what="b ready")
    pids = [e.pid for e in rec.of("started") if e.pid is not None]

    await sup.close(grace=0.3)

    assert sup.replicas() == {}
    await waiter(lambda: all(gone(pid) for pid in pids), what="every replica gone")
    with pytest.raises(RuntimeError):
        await sup.start_replica("d", script("d", "pass"))


async def test_a_grandchild_is_gone_after_stop(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    await sup.start_replica("p#1", script("p#1", SPAWNS_GRANDCHILD))
    await waiter(lambda: bool(rec.printed("p#1")), what="grandchild pid")
    grandchild = int(rec.printed("p#1")[0].split()[1])
    assert not gone(grandchild)

    await sup.stop_replica("p#1", grace=2.0)

    await waiter(lambda: gone(grandchild), what="grandchild gone")


async def test_a_crashed_replicas_grandchild_is_gone_before_the_restart(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    policy = RestartPolicy(max_restarts=0)
    await sup.start_replica("p#1", script("p#1", SPAWNS_GRANDCHILD, "crash"), policy)
    await waiter(lambda: bool(rec.of("gave_up")), what="gave_up")
    grandchild = int(rec.printed("p#1")[0].split()[1])

    await waiter(lambda: gone(grandchild), what="grandchild gone")


SUPERVISING_PROCESS = """
    import asyncio, json, sys
    from llamactl.server.supervisor import ProcessSpec, Supervisor

    async def main():
        sup = Supervisor()
        pids = []
        for i in (1, 2):
            argv = [sys.executable, "-c", "import time; time.sleep(120)"]
            spec = ProcessSpec(name=f"w#{i}", argv=argv, env={})
            pids.append((await sup.start_replica(f"w#{i}", spec)).pid)
        print(json.dumps(pids), flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
"""


async def test_no_orphans_when_the_supervising_process_is_sigkilled(
    script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    spec = script("supervising_host", SUPERVISING_PROCESS)
    proc = await asyncio.create_subprocess_exec(
        *spec.argv,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=spec.cwd,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        pids = json.loads(line)
        assert len(pids) == 2
        assert not any(gone(pid) for pid in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    await waiter(lambda: all(gone(pid) for pid in pids), what="both replicas gone")


async def test_stop_does_not_hang_on_a_descendant_that_left_the_group_holding_the_pipe(
    rec: Recorder, script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    body = """
        import subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
        )
        print("escaped", child.pid, flush=True)
        time.sleep(120)
    """
    sup = Supervisor(on_event=rec.on_event, output=rec.output, output_drain=0.2)
    await sup.start_replica("x#1", script("x#1", body))
    await waiter(lambda: bool(rec.printed("x#1")), what="escaped pid")
    escaped = int(rec.printed("x#1")[0].split()[1])
    try:
        await asyncio.wait_for(sup.close(grace=2.0), 10)
        assert rec.of("stopped")[0].exit_code == -signal.SIGTERM
    finally:
        os.kill(escaped, signal.SIGKILL)
    await waiter(lambda: gone(escaped), what="escaped process gone")


FORGETS_TO_CLOSE = """
    import asyncio, sys
    from llamactl.server.supervisor import ProcessSpec, Supervisor

    async def main():
        sup = Supervisor(output=lambda name, line: None)
        spec = ProcessSpec(name="w", argv=[sys.executable, "-c", "import time; time.sleep(120)"])
        print((await sup.start_replica("w", spec)).pid, flush=True)

    asyncio.run(main())
"""


async def test_a_loop_that_ends_without_close_kills_its_replicas_cleanly(
    script: ScriptFactory, waiter: WaitUntil, gone: Callable[[int], bool]
) -> None:
    spec = script("forgetful_host", FORGETS_TO_CLOSE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        *spec.argv[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)

    assert (proc.returncode, err.decode()) == (0, "")
    await waiter(lambda: gone(int(out)), what="replica gone")
