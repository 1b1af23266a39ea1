"""bench.scaleout's table."""

from __future__ import annotations

from bench.scaleout import render


def test_the_scaleout_table_shows_each_rate_and_its_ratio_to_the_embedded_default() -> None:
    rates = {
        ("embedded", "function", 1): 500.0,
        ("pg+redis, 1 server", "function", 1): 250.0,
        ("pg+redis, 2 servers", "function", 1): 400.0,
    }
    table = render(rates, [1]).splitlines()
    assert table[0] == "| setup | service | 1 worker |"
    assert "| embedded | function echo | 500/s |" in table
    assert "| pg+redis, 1 server | function echo | 250/s (0.50x) |" in table
    assert "| pg+redis, 2 servers | function echo | 400/s (0.80x) |" in table
    assert "| embedded | workflow echo |  |" in table
