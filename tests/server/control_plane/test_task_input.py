"""What a task's input may be: a JSON object a worker can take, checked however it is written."""

from __future__ import annotations

import json

import pytest

from llamactl.server.control_plane.task_input import MAX_INPUT_DEPTH, decode_input
from llamactl.server.errors import InvalidRequest


def _nested(depth: int) -> str:
    """A JSON object whose value nests ``depth`` levels deep (as decode_input counts them)."""
    return '{"a": ' + "[" * (depth - 2) + "1" + "]" * (depth - 2) + "}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        ("   ", {}),
        ('{"message": "hi"}', {"message": "hi"}),
        ('{"text": "grüße, 日本"}', {"text": "grüße, 日本"}),
        ('{"emoji": "\\ud83d\\ude00"}', {"emoji": "\U0001f600"}),  # a pair of surrogate escapes
        ('{"brackets": "' + "[{" * 80 + '"}', {"brackets": "[{" * 80}),  # in a string: not nesting
    ],
)
def test_accepted(raw: str, expected: dict[str, object]) -> None:
    assert decode_input(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("[1, 2]", "not list"),
        ('"hi"', "not str"),
        ("{not json", "Expecting property name"),
        ('{"a": "\\ud800"}', "lone surrogate"),  # an escape in ASCII text
        ('{"a": "\\uDC00 é"}', "lone surrogate"),  # upper-case hex, non-ASCII text around it
        ('{"a": "\ud800"}', "lone surrogate"),  # the character itself in the str
    ],
)
def test_refused(raw: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        decode_input(raw)


def test_nesting_is_bounded_at_the_limit_exactly() -> None:
    assert decode_input(_nested(MAX_INPUT_DEPTH))
    with pytest.raises(InvalidRequest, match=f"nested more than {MAX_INPUT_DEPTH} levels"):
        decode_input(_nested(MAX_INPUT_DEPTH + 1))
    with pytest.raises(InvalidRequest, match=f"nested more than {MAX_INPUT_DEPTH} levels"):
        decode_input("{" + '"a": {' * 5000 + "}" * 5000 + "}")  # deeper than the parser goes


def test_nested_counts_like_decode_input() -> None:
    value = json.loads(_nested(4))
    assert value == {"a": [[1]]}  # object, list, list, scalar: four levels
