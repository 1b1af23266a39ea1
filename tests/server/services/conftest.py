"""Fixtures for the service worker tests: user modules written into tmp_path, a clean import state."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamactl.server.services.adapters import Runnable, adapt
from llamactl.server.services.loader import load_target

from .usercode import FLOWS, FUNCS

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


@pytest.fixture
def load(source_dir: Path, write_module: WriteModule) -> Callable[[str], Runnable]:
    """Loads ``module:attr`` of the usercode modules (``flows``, ``funcs``) as a Runnable."""
    write_module("flows.py", FLOWS)
    write_module("funcs.py", FUNCS)

    def load(path: str) -> Runnable:
        return adapt(load_target(source_dir, path), label=path)

    return load
