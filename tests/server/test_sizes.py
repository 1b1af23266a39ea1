"""Sizes as the deployment file and the errors write them."""

from __future__ import annotations

import pytest

from llamactl.server.sizes import parse_size, show_size


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (900, "900 bytes"),
        (65536, "64 KB"),
        (1_100_000_000, "1.0 GB"),
        (1_990_000, "1.9 MB"),
        (128 << 20, "128 MB"),
    ],
)
def test_show_size(size: int, shown: str) -> None:
    assert show_size(size) == shown


def test_a_size_written_either_way_reads_the_same() -> None:
    assert parse_size("64K") == parse_size("64KiB") == parse_size("65536") == 65536
    with pytest.raises(ValueError, match="'lots' is not a size"):
        parse_size("lots")
