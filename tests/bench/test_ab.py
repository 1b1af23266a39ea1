"""``python -m bench.ab``: bursts paired side by side, reported as medians of B/A (no timing
assertions: the figures are whatever the machine gives; only their shape is checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.ab import Burst, Comparison, main, shares
from bench.procfs import wakeups

REPO = Path(__file__).resolve().parents[2]


def _burst(rate: float, cpu: float = 1.0) -> Burst:
    return Burst(rate=rate, p50_ms=1000 / rate, cpu_ms=cpu, switches=20.0, ipis=5.0)


def test_each_b_burst_is_compared_with_the_a_burst_beside_it() -> None:
    c = Comparison(
        32, a=[_burst(100), _burst(200), _burst(400)], b=[_burst(110), _burst(180), _burst(480, 0.5)]
    )
    assert c.ratios("rate") == [1.1, 0.9, 1.2]
    lines = c.report()
    assert lines[0] == "32 clients:"
    assert lines[1].startswith("  A 200/s, p50 5.000 ms, CPU 1.000 ms/task, 20.0 switches and 5.00 IPIs/task")
    assert "B/A: rate 1.100" in lines[3] and "B ahead in 2 of 3" in lines[3]
    assert "p50 0.909" in lines[3] and "CPU per task 1.000" in lines[3]


def test_where_the_cpu_went_is_reported_when_it_was_measured() -> None:
    def split(loop: float) -> Burst:
        return Burst(100, 10, 1, 20, 5, loop_ms=loop, threads_ms=0.02, workers_ms=0.2, client_ms=0.1)

    lines = Comparison(1, a=[split(0.8), split(0.7), split(0.9)], b=[split(0.6)] * 3).report()
    assert lines[-1] == (
        "  CPU per task in ms, A -> B: server loop 0.800 -> 0.600, its other threads 0.020 -> 0.020, "
        "workers 0.200 -> 0.200, load client 0.100 -> 0.100"
    )
    assert not any(
        "CPU per task in ms" in line for line in Comparison(1, a=[_burst(1)], b=[_burst(1)]).report()
    )


def test_one_pair_is_reported_too() -> None:
    lines = Comparison(1, a=[_burst(100)], b=[_burst(50)]).report()
    assert lines[0] == "1 client:"
    assert "rate 0.500 (middle half 0.500-0.500, B ahead in 0 of 1)" in lines[3]


def test_bursts_are_spread_over_the_pairs_of_servers() -> None:
    assert shares(20, 2) == [10, 10]
    assert shares(7, 3) == [3, 2, 2]
    assert shares(1, 1) == [1]


def test_each_pair_of_servers_median_is_reported_beside_the_whole() -> None:
    c = Comparison(8, a=[_burst(100), _burst(100)], b=[_burst(110), _burst(120)])
    c.extend(Comparison(8, a=[_burst(100)], b=[_burst(90)]))
    assert c.servers == [2, 1]
    assert c.per_servers() == pytest.approx([1.15, 0.9])
    lines = c.report()
    assert "B ahead in 2 of 3" in lines[3]
    assert lines[4] == "  B/A rate of each pair of servers: 1.150, 0.900"
    assert len(Comparison(8, a=[_burst(100)], b=[_burst(90)]).report()) == 4  # one pair: no such line


def test_more_pairs_than_bursts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--a", str(REPO), "--b", str(REPO), "--bursts", "2", "--pairs", "3"])
    assert exc.value.code == 2
    assert "--pairs 3: give 1 to --bursts (2)" in capsys.readouterr().err


def test_the_machine_counters_only_grow() -> None:
    first = wakeups()
    Path(REPO / "README.md").read_bytes()
    second = wakeups()
    assert second.switches >= first.switches > 0
    assert second.ipis >= first.ipis >= 0


def test_a_folder_without_llamactl_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--a", str(tmp_path), "--b", str(REPO)])
    assert exc.value.code == 2
    assert "not a llamactl checkout" in capsys.readouterr().err


def test_a_short_run_of_this_checkout_against_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--a", str(REPO), "--b", str(REPO), "--clients", "1,4", "--seconds", "0.2", "--bursts", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "service echo: 2 bursts of 0.2 s per side and client count, over 2 pairs of servers" in out
    for clients in ("1 client:", "4 clients:"):
        assert clients in out
    ratios = re.findall(r"B/A: rate (\d+\.\d+) \(middle half .* B ahead in (\d) of 2\)", out)
    assert len(ratios) == 2 and all(float(r) > 0 for r, _ in ratios), out
    each = re.findall(r"B/A rate of each pair of servers: (\d+\.\d+), (\d+\.\d+)", out)
    assert len(each) == 2, out  # a burst from each pair, at each client count
    number = r"(\d+\.\d{3}) -> (\d+\.\d{3})"
    split = re.findall(
        rf"CPU per task in ms, A -> B: server loop {number}, its other threads {number}, "
        rf"workers {number}, load client {number}",
        out,
    )
    assert len(split) == 2, out
    for loop_a, loop_b, _, _, workers_a, workers_b, client_a, client_b in split:
        assert all(float(v) > 0 for v in (loop_a, loop_b, workers_a, workers_b, client_a, client_b)), out


def test_events_go_with_the_streaming_service_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--a", str(REPO), "--b", str(REPO), "--events", "100"])
    assert exc.value.code == 2
    assert "--events N (N >= 1) goes with --service stream" in capsys.readouterr().err


def test_a_short_run_of_big_streams(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--a", str(REPO), "--b", str(REPO), "--service", "stream", "--events", "200"]
    assert main([*argv, "--clients", "2", "--seconds", "0.3", "--bursts", "1"]) == 0
    out = capsys.readouterr().out
    assert "service stream, 200 events a task: 1 bursts of 0.3 s per side and client count" in out
    assert re.search(r"B/A: rate \d+\.\d{3}", out)
