"""misfits(): which inputs do not fit a function's annotations, as JSON values judge them."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from llamactl.server.services.input_types import misfits


class Custom:
    pass


def typed(
    n: int,
    x: float,
    s: str,
    flag: bool,
    items: list[int],
    table: dict[str, Any],
    mode: Literal["a", "b"],
    maybe: int | None,
    anything: Any,
    custom: Custom,
    either: int | Custom,
    *args: int,
    **kwargs: str,
) -> None:
    pass


def untyped(a, b=1):  # type: ignore[no-untyped-def]
    pass


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n", 1),
        ("x", 1),
        ("x", 1.5),
        ("s", "x"),
        ("flag", False),
        ("items", ["not", "checked", "inside"]),
        ("table", {}),
        ("mode", "a"),
        ("maybe", None),
        ("maybe", 3),
        ("anything", object()),
        ("custom", "a class is not judged"),
        ("either", "a member that cannot be judged"),
        ("extra", 1),
    ],
)
def test_values_that_fit_or_cannot_be_judged_are_not_named(key: str, value: object) -> None:
    assert misfits(typed, {key: value}) is None


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("n", "1", "n='1' is a str where typed declares n: int"),
        ("n", True, "n=True is a bool where typed declares n: int"),
        ("n", 1.5, "n=1.5 is a float where typed declares n: int"),
        ("x", "x", "x='x' is a str where typed declares x: float"),
        ("s", 3, "s=3 is an int where typed declares s: str"),
        ("flag", "yes", "flag='yes' is a str where typed declares flag: bool"),
        ("items", {"a": 1}, "items={'a': 1} is a dict where typed declares items: list[int]"),
        ("table", [1], "table=[1] is a list where typed declares table: dict[str, Any]"),
        ("mode", "c", "mode='c' is a str where typed declares mode: Literal['a', 'b']"),
        ("maybe", "3", "maybe='3' is a str where typed declares maybe: int | None"),
        ("s", None, "s=None is None where typed declares s: str"),
    ],
)
def test_values_that_do_not_fit_are_named_with_the_annotation(key: str, value: object, said: str) -> None:
    assert misfits(typed, {key: value}) == said


def test_every_misfit_is_named_and_long_values_are_cut() -> None:
    said = misfits(typed, {"n": "1", "s": "fine", "x": "y" * 100})
    assert said == (
        "n='1' is a str where typed declares n: int; "
        "x='yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy... is a str where typed declares x: float"
    )


def test_a_function_without_annotations_or_whose_annotations_do_not_resolve_is_not_judged() -> None:
    assert misfits(untyped, {"a": "x"}) is None

    def broken(a: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    assert misfits(broken, {"a": "x"}) is None
    assert misfits(len, {"obj": 1}) is None
