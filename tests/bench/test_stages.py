"""``python -m bench.stages``: a sequential task's path cut into stages (no timing assertions:
the figures are whatever the machine gives; only what is found and its shape is checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stage_probe_worker import worker_command, worker_out
from bench.stages import REQUEST_STEPS, SPLIT_STEPS, STEPS, WORKER_STEPS, cycles, main, stages


def _at(t0: int, us: list[tuple[str, int]], skip: str = "") -> list[tuple[str, int]]:
    """Stamps given in microseconds from ``t0`` as nanoseconds (but those of stage ``skip``)."""
    return [(stage, (t0 + t) * 1000) for stage, t in us if stage != skip]


def _task(t0: int, *, early_commit: bool = True) -> list[tuple[str, int]]:
    """One request's stamps, in microseconds from ``t0`` (as nanoseconds)."""
    us = [
        ("read", 0),
        ("sent", 300),
        *([("commit", 350), ("committed", 500)] if early_commit else []),
        ("result", 800),
        ("commit", 1000),
        ("committed", 1150),
        ("answer", 1240),
        ("answer", 1250),
    ]
    return _at(t0, us)


def test_each_stage_is_measured_between_the_stamps_of_one_request() -> None:
    events = [*_task(0), *_task(10_000, early_commit=False)]
    found = stages(events)
    assert (found.usual, found.total) == (2, 2)
    medians = {label: values[0] for label, values in found.steps.items()}
    assert medians == {
        "request read -> sent to its worker": 300,
        "sent -> result back (the worker, two hops)": 500,
        "result back -> its commit begins": 200,
        "the commit": 150,
        "commit ended -> answer written": 100,  # the last write of the answer
        "request read -> answer written (all but the client)": 1250,
    }
    assert found.early == [150.0]  # the task stored while its worker ran it


def test_a_request_of_another_shape_is_counted_but_not_measured() -> None:
    # A request answered without a worker (a refusal, say): read, then its answer.
    odd = [("read", 5_000_000), ("answer", 5_100_000)]
    found = stages([*_task(0), *odd, *_task(10_000)])
    assert (found.usual, found.total) == (2, 3)
    assert [len(c.events) for c in cycles(odd)] == [2]


def test_the_commit_measured_is_the_one_that_stores_the_result() -> None:
    # A quick worker: its result came back before the task's own first commit began.
    us = [
        ("read", 0),
        ("sent", 300),
        ("result", 400),
        ("commit", 450),
        ("committed", 500),
        ("commit", 600),
        ("committed", 700),
        ("answer", 800),
    ]
    found = stages([(stage, t * 1000) for stage, t in us])
    assert found.usual == 1
    assert found.steps["result back -> its commit begins"] == [200]
    assert found.steps["the commit"] == [100]


def test_a_request_read_in_pieces_stays_one_cycle() -> None:
    events = [("read", 0), ("read", 10_000), *_task(20)[1:]]
    assert len(cycles(events)) == 1
    assert stages(events).usual == 1


def _split_task(t0: int, *, skip: str = "") -> list[tuple[str, int]]:
    """A request whose result went through every ``--split`` stamp (but ``skip``), with others
    of the same names before the result and after the commit, which do not count."""
    us = [
        ("read", 0),
        ("submit", 100),
        ("sent", 300),
        ("result", 800),
        ("frames", 810),
        ("offer", 830),
        ("offer", 835),  # a second one: the first counts
        ("apply", 860),
        ("final", 880),
        ("transition", 890),
        ("submit", 940),
        ("commit", 950),
        ("frames", 960),
        ("committed", 1100),
        ("answer", 1150),
    ]
    return _at(t0, us, skip)


def test_split_cuts_the_time_between_the_result_and_its_commit() -> None:
    found = stages([*_split_task(0), *_split_task(10_000), *_split_task(20_000, skip="apply")])
    assert found.usual == 3
    assert found.steps["result back -> its commit begins"] == [150, 150, 150]
    assert {label: values for label, values in found.split.items()} == {
        "-> the broker has its frames": [10, 10],
        "-> offered to the control plane's consumer": [20, 20],
        "-> its report's application begins": [30, 30],
        "-> the final report's handler begins": [20, 20],
        "-> the task record's change begins": [10, 10],
        "-> the commit's writes go to the writer": [50, 50],
        "-> the commit begins": [10, 10],
    }
    assert "result back -> its commit begins, cut finer (2 of 3 tasks)" in "\n".join(found.report())
    assert found.request == {}  # no request stamps: that cut is left out


def _request_task(t0: int, *, skip: str = "") -> list[tuple[str, int]]:
    """A request that went through every ``--split`` stamp of its way to its worker (but
    ``skip``), among stamps of the same names that do not count: a link's turn and a delivery
    before its publish (the previous task's confirm, say), a second link turn after it."""
    us = [
        ("read", 0),
        ("link", 5),
        ("parsed", 40),
        ("guard", 50),
        ("route", 70),
        ("body", 80),
        ("deliver", 90),
        ("handler", 130),
        ("create", 160),
        ("publish", 180),
        ("link", 200),
        ("link", 205),
        ("deliver", 215),
        ("sent", 240),
        ("result", 800),
        ("commit", 1000),
        ("committed", 1150),
        ("answer", 1250),
    ]
    return _at(t0, us, skip)


def test_split_cuts_the_time_between_the_request_s_read_and_its_send() -> None:
    found = stages([*_request_task(0), *_request_task(10_000), *_request_task(20_000, skip="route")])
    assert found.usual == 3
    assert found.steps["request read -> sent to its worker"] == [240, 240, 240]
    assert {label: values for label, values in found.request.items()} == {
        "-> uvicorn has parsed it": [40, 40],
        "-> the ASGI middlewares before the guard": [10, 10],
        "-> the guard, the routing": [20, 20],
        "-> the route reads its parameters": [10, 10],
        "-> its body read and validated, the task defined": [50, 50],
        "-> the task's checks and record": [30, 30],
        "-> its start message goes to the queue": [20, 20],
        "-> the broker has it (a loop turn)": [20, 20],
        "-> the broker delivers it": [15, 15],
        "-> written to its worker's socket": [25, 25],
    }
    assert [label for _, _, label in REQUEST_STEPS] == list(found.request)
    assert "request read -> sent to its worker, cut finer (2 of 3 tasks)" in "\n".join(found.report())


def test_without_split_stamps_nothing_is_cut_finer() -> None:
    found = stages(_task(0))
    assert found.usual == 1
    assert found.split == {}
    assert found.worker == {}  # a checkout whose probe does not stamp its workers
    report = "\n".join(found.report())
    assert "cut finer" not in report
    assert "in the worker" not in report


def _worker_task(t0: int, *, skip: str = "") -> list[tuple[str, int]]:
    """A request whose worker stamped each of its stages (but ``skip``), among writes and reads of
    its own that do not count: a heartbeat before the run's end, an answer's read after it."""
    us = [
        ("read", 0),
        ("w_out", 100),  # a heartbeat before the task came
        ("sent", 300),
        ("w_in", 340),
        ("w_handle", 400),
        ("w_run", 420),
        ("w_out", 450),  # an event the run streamed
        ("w_ran", 700),
        ("w_in", 705),  # a confirm
        ("w_out", 730),
        ("w_handle", 740),  # the previous task's handler ending: not this one's
        ("result", 800),
        ("commit", 1000),
        ("committed", 1150),
        ("answer", 1250),
    ]
    return _at(t0, us, skip)


def test_the_worker_s_stamps_cut_the_time_between_the_send_and_the_result() -> None:
    found = stages([*_worker_task(0), *_worker_task(10_000), *_worker_task(20_000, skip="w_ran")])
    assert found.usual == 3
    assert found.steps["sent -> result back (the worker, two hops)"] == [500, 500, 500]
    assert {label: values for label, values in found.worker.items()} == {
        "-> the worker has it (a hop)": [40, 40],
        "-> its handler begins": [60, 60],
        "-> the run begins": [20, 20],
        "-> the run ends (its set-up and the code)": [280, 280],
        "-> the result is written": [30, 30],
        "-> the server has it (a hop)": [70, 70],
    }
    assert "sent -> result back, in the worker (2 of 3 tasks)" in "\n".join(found.report())


def test_the_worker_probe_runs_only_a_worker_s_command(tmp_path: Path) -> None:
    out = tmp_path / "stamps.txt"
    plain = ["/usr/bin/python3", "-P", "-m", "llamactl.server.services"]
    assert worker_command(plain, out) == [
        "/usr/bin/python3",
        "-P",
        "-m",
        "bench.stage_probe_worker",
        str(out),
    ]
    with pytest.raises(ValueError, match="not a worker's command"):
        worker_command(["/usr/bin/python3", "-m", "something.else"], out)
    assert worker_out(out, 42) == tmp_path / "stamps.txt.worker-42"


def test_split_refuses_a_checkout_whose_probe_has_no_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "stage_probe.py").write_text('"""python -m bench.stage_probe OUT serve FILE"""\n')
    with pytest.raises(SystemExit):
        main(["--checkout", str(tmp_path), "--split"])
    assert "its bench/stage_probe.py is older than --split" in capsys.readouterr().err


def test_a_real_server_is_measured_stage_by_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--service", "echo", "--seconds", "0.5", "--split"]) == 0
    out = capsys.readouterr().out
    assert "service echo, one client for 0.5 s:" in out
    usual, total = (int(n) for n in out.split(" tasks took")[0].split("\n")[-1].split(" of "))
    assert 0 < usual <= total
    for _, _, label in STEPS:
        assert label in out
    assert "a commit while the worker runs (off the path)" in out
    assert "client p50" in out
    # Each layer of the request's way to its worker, and of the result's way to its commit, was
    # stamped, in the server's own code.
    for title, cut in (
        ("request read -> sent to its worker", REQUEST_STEPS),
        ("its commit begins", SPLIT_STEPS),
    ):
        split = int(out.split(f"{title}, cut finer (")[1].split(" of ")[0])
        assert 0 < split <= usual
        for _, _, label in cut:
            assert label in out
    # And the worker's way from the task's bytes to its result's, in the worker's own code.
    in_worker = int(out.split("in the worker (")[1].split(" of ")[0])
    assert 0 < in_worker <= usual
    for _, _, label in WORKER_STEPS:
        assert label in out
