"""Supervisor.ask: a signal to a replica's process, and the wait for what it prints in answer."""

from __future__ import annotations

import signal

from llamactl.server.supervisor import RestartPolicy, Supervisor

from .helpers import Recorder, ScriptFactory, WaitUntil

ANSWERS_SIGUSR2 = """
    import os, signal, sys, time
    def answer(*_):
        for n in range(3):
            print(f"answer {n}", flush=True)
            time.sleep(0.05)  # printed over a while: the wait is for all of it
    signal.signal(signal.SIGUSR2, answer)
    print(f"ready {os.getpid()}", flush=True)
    while True:
        time.sleep(1)
"""


async def test_ask_returns_once_the_answer_has_come_through_the_output(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    await sup.start_replica("a#1", script("a#1", ANSWERS_SIGUSR2), RestartPolicy())
    await waiter(lambda: any(line.startswith("ready") for line in rec.printed("a#1")), what="ready")

    assert await sup.ask("a#1", signal.SIGUSR2)
    assert rec.printed("a#1")[1:] == ["answer 0", "answer 1", "answer 2"]
    assert sup.replicas()["a#1"].state == "running"  # the leader alone was signalled, and lives


async def test_ask_of_a_process_that_prints_nothing_gives_up_after_within(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    body = ANSWERS_SIGUSR2.replace(
        "signal.signal(signal.SIGUSR2, answer)", "signal.signal(signal.SIGUSR2, lambda *_: None)"
    )
    await sup.start_replica("s#1", script("s#1", body), RestartPolicy())
    await waiter(lambda: bool(rec.printed("s#1")), what="ready")

    assert not await sup.ask("s#1", signal.SIGUSR2, within=0.5)
    assert not await sup.ask("nobody#1", signal.SIGUSR2)


async def test_a_replica_still_running_after_its_stop_grace_is_asked_for_last_words_then_killed(
    rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    """Before, it was killed without a word of where it was stuck."""
    sup = Supervisor(on_event=rec.on_event, output=rec.output, last_words=signal.SIGUSR2)
    body = ANSWERS_SIGUSR2.replace(
        "signal.signal(signal.SIGUSR2, answer)",
        "signal.signal(signal.SIGUSR2, answer)\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)",
    )
    try:
        await sup.start_replica("l#1", script("l#1", body), RestartPolicy())
        await waiter(lambda: bool(rec.printed("l#1")), what="ready")
        assert await sup.stop_replica("l#1", grace=0.3) == -signal.SIGKILL
    finally:
        await sup.close(grace=0.5)
    assert rec.printed("l#1")[1:] == ["answer 0", "answer 1", "answer 2"]
