"""The remembered ``inspect.signature`` that the workflows library's instrumentation uses."""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import workflows

from llamactl.server.services import signatures
from llamactl.server.services.signatures import RememberingInspect

from .test_execution import run


def _made(default: object) -> Callable[..., None]:
    """A new closure on every call, with the same code (what the library makes per run)."""

    def run(a: int, b: object = default, *, flag: bool = False) -> None:
        del a, b, flag

    return run


class _Thing:
    def method(self, a: int, *, flag: bool = False) -> None: ...


def test_closures_of_one_code_share_a_signature_worked_out_once() -> None:
    remembering = RememberingInspect()
    default = object()
    first, second = _made(default), _made(default)
    got = remembering.signature(first)
    assert got == inspect.signature(first)
    assert remembering.signature(second) is got and remembering.hits == 1


def test_a_closure_with_other_defaults_gets_its_own_signature() -> None:
    remembering = RememberingInspect()
    one, other = object(), object()
    remembering.signature(_made(one))
    got = remembering.signature(_made(other))
    assert got.parameters["b"].default is other and remembering.hits == 0


def test_a_method_is_remembered_whatever_its_instance() -> None:
    remembering = RememberingInspect()
    first = remembering.signature(_Thing().method)
    assert first == inspect.signature(_Thing().method) and list(first.parameters) == ["a", "flag"]
    assert remembering.signature(_Thing().method) is first
    assert remembering.signature(_Thing.method) == inspect.signature(_Thing.method)  # unbound: self too


def test_a_wrapper_has_the_signature_of_what_it_wraps() -> None:
    remembering = RememberingInspect()
    thing = _Thing()

    @functools.wraps(thing.method)
    def wrapper(*args: Any, **kwargs: Any) -> None: ...

    assert remembering.signature(wrapper) == inspect.signature(wrapper)
    assert list(remembering.signature(wrapper).parameters) == ["a", "flag"]

    def told(x: int) -> None: ...

    told.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    assert remembering.signature(told) == inspect.Signature()


def test_a_wrapper_that_wraps_itself_is_left_to_inspect() -> None:
    def loop() -> None: ...

    loop.__wrapped__ = loop  # type: ignore[attr-defined]
    try:
        RememberingInspect().signature(loop)
    except ValueError as exc:  # what inspect.unwrap says of a cycle
        assert "wrapper loop" in str(exc)
    else:
        raise AssertionError("a cycle of __wrapped__ went unnoticed")


def test_other_callables_and_options_go_to_inspect_itself() -> None:
    remembering = RememberingInspect()
    assert remembering.signature(_Thing) == inspect.signature(_Thing)
    assert remembering.signature(len) == inspect.signature(len)
    assert remembering.signature(functools.partial(_made(1), 1)) == inspect.signature(
        functools.partial(_made(1), 1)
    )
    assert remembering.signature(_made(1), eval_str=True) == inspect.signature(_made(1), eval_str=True)
    assert remembering.isfunction is inspect.isfunction  # the rest is the real module


def test_code_that_goes_away_takes_its_entry_with_it() -> None:
    remembering = RememberingInspect()
    for n in range(100):
        namespace: dict[str, Any] = {}
        exec(f"def made{n}(x): pass", namespace)  # new code each time
        remembering.signature(namespace[f"made{n}"])
    del namespace
    gc.collect()
    assert len(remembering._functions) <= 1


def test_installing_gives_the_librarys_modules_the_remembering_inspect() -> None:
    installed = signatures.install()
    assert signatures.install() is installed  # once per process
    for name in signatures.MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # workflows 1.x has no such module
        assert module.inspect is installed


async def test_a_workflow_run_again_finds_its_signatures_remembered(load: Any) -> None:
    runnable = load("flows:counter")
    installed = signatures.install()
    before = installed.hits
    context = None
    for n in (1, 2, 3):
        outcome = await run(runnable, context=context)
        assert outcome.result["count"] == n
        context = outcome.context
    if hasattr(workflows.Workflow, "_step_functions_version"):  # workflows 2.x
        assert installed.hits - before >= 4  # the run's and its step's, on the second and third runs
