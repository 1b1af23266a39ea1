"""``bench.procfs``: a server's CPU split into its event loop, its other threads and its workers,
read from /proc of real processes that burn a known amount of CPU in each place."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bench.procfs import CpuSplit, cpu_split

BURN = 0.3
"""CPU seconds each place burns: 30 clock ticks, well above their granularity."""

_SERVER = textwrap.dedent(
    f"""
    import subprocess, sys, threading, time

    def burn():
        start = time.thread_time()
        while time.thread_time() - start < {BURN}:
            pass

    child = subprocess.Popen([sys.executable, "-c", "import sys, time\\n"
        "start = time.process_time()\\n"
        "while time.process_time() - start < {BURN}: pass\\n"
        "print('burnt', flush=True)\\n"
        "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    burnt, stop = threading.Event(), threading.Event()

    def other_thread():  # burns, then stays: a thread that ended is not counted
        burn()
        burnt.set()
        stop.wait()

    threading.Thread(target=other_thread).start()
    burn()
    burnt.wait()
    child.stdout.readline()
    print("burnt", flush=True)
    sys.stdin.read()
    stop.set()
    child.stdin.close()
    child.wait()
    """
)


def test_the_split_finds_the_loop_the_other_threads_and_each_worker() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None
        try:
            assert server.stdout.readline() == "burnt\n"  # every place has burnt its share
            split = cpu_split(server.pid)
            assert len(split.child_cpu) == 1
            for part in (split.loop, split.threads, split.workers):
                assert BURN * 0.8 <= part < BURN * 3, split
            assert split.process >= split.loop + split.threads
        finally:
            server.kill()


def test_a_later_reading_less_an_earlier_one_is_what_was_spent_between() -> None:
    earlier = CpuSplit(process=1.75, loop=1.0, thread_cpu={2: 0.5, 3: 0.25}, child_cpu={10: 2.0, 11: 1.0})
    # thread 3 and child 11 ended, thread 4 and child 12 started
    later = CpuSplit(process=2.5, loop=1.25, thread_cpu={2: 0.75, 4: 0.5}, child_cpu={10: 2.5, 12: 0.25})
    spent = later - earlier
    assert (spent.process, spent.loop) == (0.75, 0.25)  # the process counts thread 3's end too
    assert spent.thread_cpu == {2: 0.25, 4: 0.5}  # what ended is left out, not counted as negative
    assert spent.child_cpu == {10: 0.5, 12: 0.25}
    assert (spent.threads, spent.workers) == (0.75, 0.75)
