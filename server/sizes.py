"""Sizes as people write them (``16M``, ``512K``, ``1G``) and as messages show them."""

from __future__ import annotations

import re

__all__ = ["parse_size", "show_size"]

_SIZE = re.compile(r"([0-9]+)\s*([kmg]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``"4194304"``, ``"512K"``, ``"16M"``, ``"1G"`` (also ``16MB``, ``16MiB``) -> bytes (powers of 1024).

    Raises:
        ValueError: not a size (the message says what is).
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size: give bytes, or e.g. 512K, 16M, 1G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def show_size(size: int) -> str:
    """``1.1 GB``, ``64 MB``, ``512 KB``, ``900 bytes`` (powers of 1024, one decimal under ten)."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.1f} {unit}" if value < 10 and size % factor else f"{value:.0f} {unit}"
    return f"{size} bytes"
