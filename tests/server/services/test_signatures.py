"""The remembered ``inspect.signature`` that the workflows library's instrumentation uses."""

from __future__ import annotations

import gc
import importlib
import inspect

from llamactl.server.services import signatures
from llamactl.server.services.signatures import RememberingInspect


def _plain(a: int, b: str = "x") -> None: ...


class _Thing:
    def method(self, a: int, *, flag: bool = False) -> None: ...


def test_a_signature_is_what_inspect_says_and_is_worked_out_once() -> None:
    remembering = RememberingInspect()
    first = remembering.signature(_plain)
    assert first == inspect.signature(_plain)
    assert remembering.signature(_plain) is first


def test_a_method_is_remembered_per_function_whatever_its_instance() -> None:
    remembering = RememberingInspect()
    one, two = _Thing(), _Thing()
    first = remembering.signature(one.method)
    assert first == inspect.signature(one.method) and list(first.parameters) == ["a", "flag"]
    assert remembering.signature(two.method) is first
    assert remembering.signature(_Thing.method) == inspect.signature(_Thing.method)  # unbound: self too


def test_other_callables_and_options_go_to_inspect_itself() -> None:
    remembering = RememberingInspect()
    assert remembering.signature(_Thing) == inspect.signature(_Thing)
    assert remembering.signature(len) == inspect.signature(len)
    assert remembering.signature(_plain, eval_str=True) == inspect.signature(_plain, eval_str=True)
    assert remembering.isfunction is inspect.isfunction  # the rest is the real module


def test_a_function_that_goes_away_takes_its_entry_with_it() -> None:
    remembering = RememberingInspect()
    for n in range(100):
        exec(f"def made{n}(x): pass", namespace := {})  # a fresh function each time
        remembering.signature(namespace[f"made{n}"])
    del namespace
    gc.collect()
    assert len(remembering._functions) <= 1


def test_installing_gives_the_librarys_modules_the_remembering_inspect() -> None:
    signatures.install()
    signatures.install()  # again: nothing changes
    found = [importlib.import_module(name) for name in signatures.MODULES]
    assert all(isinstance(module.inspect, RememberingInspect) for module in found)
