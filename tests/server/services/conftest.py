"""Fixtures for the service worker tests: user modules written into tmp_path, a clean import state."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

WriteModule = Callable[[str, str], Path]


@pytest.fixture(autouse=True)
def _isolated_imports() -> Iterator[None]:
    """Undo what loading user modules does to sys.path and sys.modules."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    return src


@pytest.fixture
def write_module(source_dir: Path) -> WriteModule:
    """Write ``code`` (dedented) to ``source_dir/relpath``, creating folders; return the file."""

    def write(relpath: str, code: str) -> Path:
        file = source_dir / relpath
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(code))
        return file

    return write
