"""Remembered ``inspect.signature`` for the modules of ``workflows`` that ask on every run.

The library's instrumentation binds each span's arguments with ``inspect.signature(func)``: for
the run itself and for every step, on every run. The functions are new on every run (closures
made per run, a step's wrapper made per run) but their code is not, and working a signature out
anew was 6 % of a worker's samples per workflow echo task (py-spy). :func:`install` gives those
modules an ``inspect`` whose ``signature`` remembers its answer per code object and hands it to
a function with that code when what else a signature is made of is the same: the defaults (the
same objects), the keyword-only defaults and the annotations. A wrapper's signature is its
wrapped function's, as ``inspect`` says. Everything else goes to the real ``inspect``. Entries
go with their code (weak keys), so nothing grows with the number of runs. A module missing from
an installed version, or no longer importing ``inspect``, is left alone.
"""

from __future__ import annotations

import importlib
import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["MODULES", "RememberingInspect", "install"]

MODULES = (
    "llama_index_instrumentation.dispatcher",
    "workflows.runtime.types.step_function",
    "workflows.runtime.control_loop.reduce",
)
"""The modules that call ``inspect.signature`` per run or per step (workflows 2.x)."""

_MAX_WRAPPED = 16
"""How many ``__wrapped__`` links are followed here before ``inspect`` is left to do it."""


class _Remembered(NamedTuple):
    defaults: tuple[Any, ...] | None
    kwdefaults: dict[str, Any] | None
    annotations: dict[str, Any]
    signature: inspect.Signature


def _same_values(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.keys() != b.keys():
        return False
    try:
        return all(a[k] is b[k] or bool(a[k] == b[k]) for k in a)
    except Exception:  # an annotation whose == fails: not the same, work it out
        return False


class RememberingInspect:
    """``inspect``, with :meth:`signature` remembered for functions and bound methods."""

    def __init__(self) -> None:
        self._functions: weakref.WeakKeyDictionary[types.CodeType, _Remembered] = weakref.WeakKeyDictionary()
        self._methods: weakref.WeakKeyDictionary[types.CodeType, _Remembered] = weakref.WeakKeyDictionary()
        self.hits = 0
        """Signatures handed out without working them out (for tests)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    def signature(self, obj: Callable[..., Any], **options: Any) -> inspect.Signature:
        """``inspect.signature(obj)``, worked out once per function's code."""
        if options:
            return inspect.signature(obj, **options)
        return self._signature(obj, 0)

    def _signature(self, obj: Callable[..., Any], depth: int) -> inspect.Signature:
        kind = type(obj)
        if kind is types.MethodType:
            func = obj.__func__  # type: ignore[attr-defined]
            if type(func) is types.FunctionType and not _special(func):
                # A bound method's signature is its function's without the first parameter,
                # whatever the instance.
                return self._remembered(func, obj, self._methods)
        elif kind is types.FunctionType and "__signature__" not in obj.__dict__:
            wrapped = obj.__dict__.get("__wrapped__")
            if wrapped is None:
                return self._remembered(obj, obj, self._functions)  # type: ignore[arg-type]
            if depth < _MAX_WRAPPED:
                return self._signature(wrapped, depth + 1)  # what inspect.unwrap does
        return inspect.signature(obj)

    def _remembered(
        self,
        func: types.FunctionType,
        obj: Callable[..., Any],
        table: weakref.WeakKeyDictionary[types.CodeType, _Remembered],
    ) -> inspect.Signature:
        code, defaults, kwdefaults = func.__code__, func.__defaults__, func.__kwdefaults__
        annotations = func.__annotations__
        found = table.get(code)
        if (
            found is not None
            and (
                found.defaults is defaults
                or (
                    defaults is not None
                    and found.defaults is not None
                    and len(defaults) == len(found.defaults)
                    and all(a is b for a, b in zip(defaults, found.defaults, strict=True))
                )
            )
            and (found.kwdefaults is kwdefaults or _same_identity(found.kwdefaults, kwdefaults))
            and (found.annotations is annotations or _same_values(found.annotations, annotations))
        ):
            self.hits += 1
            return found.signature
        signature = inspect.signature(obj)
        table[code] = _Remembered(defaults, kwdefaults, annotations, signature)
        return signature


def _same_identity(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)


def _special(func: types.FunctionType) -> bool:
    """A function whose signature is not its code's: it says it, or it wraps another."""
    return "__signature__" in func.__dict__ or "__wrapped__" in func.__dict__


_REMEMBERING = RememberingInspect()


def install() -> RememberingInspect:
    """Give each of :data:`MODULES` that is importable and not done yet this process's remembering
    ``inspect``; return it."""
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "inspect", None) is inspect:
            module.inspect = _REMEMBERING  # type: ignore[attr-defined]
    return _REMEMBERING
