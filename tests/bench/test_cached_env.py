"""``bench.cached_env.byte_compile``: a checkout's sources get their bytecode, as an installed
llamactl has it, even where Python is told not to write bytecode itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.cached_env import byte_compile


def test_each_source_folder_gets_its_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1, as here
    for folder in ("llamactl", "server", "tui"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "module.py").write_text("VALUE = 1\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "module.py").write_text("VALUE = 1\n")
    byte_compile(tmp_path)
    tag = sys.implementation.cache_tag
    for folder in ("llamactl", "server", "tui"):
        assert (tmp_path / folder / "__pycache__" / f"module.{tag}.pyc").is_file()
    assert not (tmp_path / "elsewhere" / "__pycache__").exists()  # only llamactl's sources
