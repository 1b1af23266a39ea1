"""Remembered ``inspect.signature`` for the modules of ``workflows`` that ask on every run.

The library's instrumentation binds each span's arguments with ``inspect.signature(func)``: for
the run itself and for every step, on every run, of the same few functions. Working a signature
out anew each time was 6 % of a worker's CPU per workflow echo task (py-spy). :func:`install`
gives those modules an ``inspect`` whose ``signature`` remembers its answer per function (and
per method of a class, whatever instance it is bound to); everything else is the real module.
A function that goes away takes its entry with it (weak keys), so nothing grows with the number
of runs. A module missing from an installed version, or no longer importing ``inspect``, is left
alone.
"""

from __future__ import annotations

import importlib
import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["MODULES", "RememberingInspect", "install"]

MODULES = (
    "llama_index_instrumentation.dispatcher",
    "workflows.runtime.types.step_function",
    "workflows.runtime.control_loop.reduce",
)
"""The modules that call ``inspect.signature`` per run or per step (workflows 2.x)."""


class RememberingInspect:
    """``inspect``, with :meth:`signature` remembered for plain functions and bound methods."""

    def __init__(self) -> None:
        self._functions: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature] = (
            weakref.WeakKeyDictionary()
        )
        self._methods: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature] = (
            weakref.WeakKeyDictionary()
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    def signature(self, obj: Callable[..., Any], **options: Any) -> inspect.Signature:
        """``inspect.signature(obj)``, worked out once per function."""
        if options:
            return inspect.signature(obj, **options)
        if type(obj) is types.FunctionType:
            table, key = self._functions, obj
        elif type(obj) is types.MethodType and type(obj.__func__) is types.FunctionType:
            # A bound method's signature is its function's without the first parameter, for any
            # instance; a new method object is made at every attribute access, so key on the function.
            table, key = self._methods, obj.__func__
        else:
            return inspect.signature(obj)
        found = table.get(key)
        if found is None:
            found = table[key] = inspect.signature(obj)
        return found


def install() -> RememberingInspect:
    """Give each of :data:`MODULES` that is imported or importable a remembering ``inspect``."""
    remembering = RememberingInspect()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "inspect", None) is inspect:
            module.inspect = remembering  # type: ignore[attr-defined]
    return remembering
