"""The thread that writes `serve`'s lines: the caller never waits for a reader that stopped."""

from __future__ import annotations

import threading
import time

from llamactl.cli.line_writer import LineWriter


class _Stalled:
    """A sink whose reader stopped reading until :meth:`resume`."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.writes = 0
        self.entered = threading.Event()
        self._go = threading.Event()

    def __call__(self, text: str) -> None:
        self.entered.set()
        self._go.wait()
        self.writes += 1
        self.lines += text.split("\n")

    def resume(self) -> None:
        self._go.set()


def _put_all(writer: LineWriter, lines: list[str]) -> None:
    """Put ``lines`` from another thread; fail if that takes longer than 30 s (a blocked put)."""
    done = threading.Thread(target=lambda: [writer.put(line) for line in lines], daemon=True)
    done.start()
    done.join(30)
    assert not done.is_alive(), "put() blocked on a reader that stopped reading"


def test_a_stalled_reader_costs_lines_never_a_blocked_put() -> None:
    sink = _Stalled()
    writer = LineWriter(sink, limit_bytes=1000)
    writer.put("first")
    assert sink.entered.wait(10)  # the thread is stuck in the write
    _put_all(writer, [f"{n:03d}" + "x" * 96 for n in range(100)])  # 100 bytes each, with newline
    assert writer.dropped == 90  # ten fit in 1,000 bytes
    writer.put("small")  # no room for it either: the gap goes on
    assert writer.dropped == 91
    sink.resume()
    assert writer.close(timeout=10)
    assert sink.lines[0] == "first"
    assert [line[:3] for line in sink.lines[1:11]] == [f"{n:03d}" for n in range(10)]
    assert sink.lines[11].startswith("[91 lines not shown here: stderr was not read fast enough")
    assert len(sink.lines) == 12


def test_the_notice_stands_where_the_lines_went_missing() -> None:
    sink = _Stalled()
    writer = LineWriter(sink, limit_bytes=10)
    writer.put("a")
    assert sink.entered.wait(10)
    _put_all(writer, ["bbbbbbbb", "cccccccc", "dddddddd"])  # "b" fits, "c" and "d" do not
    sink.resume()
    deadline = time.monotonic() + 10
    while len(sink.lines) < 3:  # written: there is room again
        assert time.monotonic() < deadline, sink.lines
        time.sleep(0.01)
    writer.put("e")
    assert writer.close(timeout=10)
    assert sink.lines == ["a", "bbbbbbbb", sink.lines[2], "e"]
    assert sink.lines[2].startswith("[2 lines not shown here")


def test_close_gives_up_on_a_reader_that_never_reads() -> None:
    sink = _Stalled()
    writer = LineWriter(sink)
    writer.put("stuck")
    assert sink.entered.wait(10)
    assert writer.close(timeout=0.2) is False
    sink.resume()


def test_lines_that_waited_go_out_in_one_write() -> None:
    """A worker printing as fast as it can, into a file: one write per line could not keep up
    (82 % of 200,000 lines were dropped), one write for what waited does."""
    sink = _Stalled()
    writer = LineWriter(sink)
    writer.put("first")
    assert sink.entered.wait(10)
    _put_all(writer, [f"line {n}" for n in range(1000)])
    sink.resume()
    assert writer.close(timeout=10)
    assert sink.lines == ["first", *(f"line {n}" for n in range(1000))]
    assert (sink.writes, writer.dropped) == (2, 0)


def test_a_sink_that_raises_loses_that_write_only() -> None:
    seen: list[str] = []
    failed = threading.Event()

    def sink(text: str) -> None:
        if "bad" in text:
            failed.set()
            raise OSError("I/O error")
        seen.append(text)

    writer = LineWriter(sink)
    writer.put("bad")
    assert failed.wait(10)
    writer.put("good")
    assert writer.close(timeout=10)
    assert seen == ["good"]
