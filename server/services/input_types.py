"""Which of a function's inputs do not fit its annotations, to name them when the function fails.

A task's input reaches a plain function as JSON values, and nothing is checked against the
function's annotations before it is called: a check would refuse values that the function takes
today (duck typing: ``x: str`` given ``3`` and formatted, say), and coercion would change what it
gets. But when the function then fails with the ``TypeError``, ``AttributeError`` or
``ValueError`` a wrong type causes, the error names each input that does not fit, so the user
does not have to work out from their own traceback that ``-a b x`` sent a string.

Only annotations a JSON value can be checked against are judged: ``int``, ``float``, ``str``,
``bool``, ``None``, ``list``, ``dict`` (and their generic forms, by their outer type), ``Literal``,
and unions of these. Anything else (a class, a protocol, ``Any``) is taken to fit.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HINTED_ERRORS", "misfits"]

HINTED_ERRORS = (TypeError, AttributeError, ValueError)
"""The errors an input of the wrong type typically causes inside the function."""

_EXACT: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),  # JSON has one number type: 2 is a fine float
    str: (str,),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
    type(None): (type(None),),
}


def misfits(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> str | None:
    """``"b='x' is a str where add declares b: float"`` for each input that does not fit its
    parameter's annotation (joined by "; "), or None when all fit or cannot be judged."""
    try:
        hints = typing.get_type_hints(fn)
        parameters = inspect.signature(fn).parameters
    except Exception:  # an annotation that does not resolve, or a builtin without a signature
        return None
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "the function"))
    found: list[str] = []
    for key, value in kwargs.items():
        parameter = parameters.get(key)
        if parameter is None or key not in hints:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if _fits(value, hints[key]) is False:
            shown = repr(value)
            if len(shown) > 40:
                shown = shown[:37] + "..."
            found.append(
                f"{key}={shown} is {_a(type(value).__name__)} where {name} declares "
                f"{key}: {_describe(hints[key])}"
            )
    return "; ".join(found) or None


def _fits(value: Any, hint: Any) -> bool | None:
    """True or False when ``value`` can be judged against ``hint``; None when it cannot."""
    if hint in _EXACT:
        if isinstance(value, bool) and hint in (int, float):
            return False  # a bool is an int to isinstance, not to a JSON user
        return isinstance(value, _EXACT[hint])
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return isinstance(value, origin)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_fits(value, member) for member in typing.get_args(hint)]
        if any(verdicts):
            return True
        return None if None in verdicts else False
    return None


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _a(word: str) -> str:
    if word == "NoneType":
        return "None"
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
