"""Validating in-process imports the services' modules: put sys.path and sys.modules back after."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.llamactl.serving import REPO

# Only the services' own modules are forgotten: dropping a library module imported for the first
# time here would give later tests a second copy of its classes.
_FORGET_UNDER = (str(REPO / "templates"), tempfile.gettempdir())


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ inside templates/
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if origin.startswith(_FORGET_UNDER):
            del sys.modules[name]
