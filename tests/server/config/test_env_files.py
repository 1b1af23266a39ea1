"""The dotenv subset we read without python-dotenv."""

from __future__ import annotations

import pytest

from llamactl.server.config.env_files import EnvFileError, parse_env_text


def test_plain_export_comments_and_blank_lines() -> None:
    text = "# comment\n\nA=1\nexport B = two words  \nC=x # trailing comment\nD=\n"
    assert parse_env_text(text, {}) == {"A": "1", "B": "two words", "C": "x", "D": ""}


def test_quotes() -> None:
    text = 'S=\'literal $A \\n # not a comment\'\nD="tab\\there\\n" # c\nM="two\nlines"\nE=after\n'
    assert parse_env_text(text, {}) == {
        "S": "literal $A \\n # not a comment",
        "D": "tab\there\n",
        "M": "two\nlines",
        "E": "after",
    }


def test_expansion_uses_earlier_keys_then_the_environment() -> None:
    text = "A=a\nB=${A}-${HOME}\nC=\"${MISSING:-fallback}\"\nD='${A}'\n"
    assert parse_env_text(text, {"HOME": "/home/x"}) == {
        "A": "a",
        "B": "a-/home/x",
        "C": "fallback",
        "D": "${A}",
    }


def test_later_keys_override_and_bare_keys_are_skipped() -> None:
    assert parse_env_text("A=1\nA=2\nBARE\n", {}) == {"A": "2"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("A=1\nnot an assignment\n", 2, "expected KEY=value"),
        ("A=1\n\nB='never closed\n", 3, "never closed"),
        ('A="x" junk\n', 1, "after the closing quote"),
        ("=value\n", 1, "expected KEY=value"),
    ],
)
def test_malformed_lines_raise_with_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(EnvFileError) as info:
        parse_env_text(text, {})
    assert info.value.line == line
    assert fragment in info.value.problem
