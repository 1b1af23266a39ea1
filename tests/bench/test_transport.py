"""``python -m bench.transport``: both floors served, bursts side by side (no timing assertions)."""

from __future__ import annotations

import pytest

from bench.transport import compare, main


async def test_both_floors_answer_in_bursts_side_by_side() -> None:
    [(path, comparison)] = await compare(clients=[2], seconds=0.2, bursts=2, paths=["/echo"])
    assert path == "/echo" and comparison.clients == 2
    assert len(comparison.a) == len(comparison.b) == 2
    assert all(burst.rate > 0 and burst.cpu_ms > 0 for burst in [*comparison.a, *comparison.b])
    assert comparison.report()[0] == "2 clients:"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--bursts", "0"], "--bursts must be at least 1"), (["--clients", "a,b"], "give whole numbers")],
)
def test_wrong_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
