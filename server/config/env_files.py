"""A small dotenv reader (the subset python-dotenv users write), so we need no extra dependency.

Supported: ``KEY=value``, ``export KEY=value``, blank lines and ``#`` comments, ``value # comment``,
single quotes (literal), double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes, may span
lines), and ``${VAR}`` / ``${VAR:-default}`` expansion in unquoted and double-quoted values
(earlier keys of the file first, then the process environment). A bare ``KEY`` (no ``=``) is
skipped, as python-dotenv gives it no value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["EnvFileError", "parse_env_file", "parse_env_text"]

_KEY = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(=)?\s*")
_EXPAND = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    """A line of an env file cannot be read. ``line`` is 1-based.

    The message never quotes the file: an env file holds secrets, and errors travel to clients and logs.
    """

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def parse_env_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read the dotenv file at ``path``; raise :class:`EnvFileError` on a malformed line."""
    # utf-8-sig: Windows editors start a file with a byte order mark, which is no part of its first key.
    return parse_env_text(path.read_text(encoding="utf-8-sig"), environ)


def parse_env_text(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse dotenv ``text``; later keys override earlier ones."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    pos, line = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        raw = text[pos : len(text) if end == -1 else end]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            pos, line = (len(text) if end == -1 else end + 1), line + 1
            continue
        start_line = line
        match = _KEY.match(text, pos + (len(raw) - len(raw.lstrip())))
        if match is None:
            raise EnvFileError(line, "expected KEY=value (or a # comment)")
        key = match.group(1)
        if match.group(2) is None:
            if raw[match.end() - pos :].strip() and not raw[match.end() - pos :].lstrip().startswith("#"):
                raise EnvFileError(line, "expected KEY=value, got a name followed by other text")
            pos, line = (len(text) if end == -1 else end + 1), line + 1
            continue
        value, pos, line = _read_value(text, match.end(), line, values, env)
        if value is None:
            raise EnvFileError(start_line, f"the quoted value of {key} is never closed")
        values[key] = value
    return values


def _read_value(
    text: str, pos: int, line: int, values: Mapping[str, str], env: Mapping[str, str]
) -> tuple[str | None, int, int]:
    """Read one value starting at ``pos``; return it, the position after its line and the next line."""
    quote = text[pos] if pos < len(text) and text[pos] in "'\"" else ""
    if not quote:
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        raw = text[pos:end]
        comment = re.search(r"\s#", raw)
        value = (raw[: comment.start()] if comment else raw).strip()
        return _expand(value, values, env), end + 1, line + 1
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            end = text.find("\n", i)
            rest = text[i + 1 : len(text) if end == -1 else end].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(line, "unexpected text after the closing quote (a comment needs a #)")
            value = "".join(out)
            if quote == '"':
                value = _expand(value, values, env)
            return value, (len(text) if end == -1 else end + 1), line + 1
        if char == "\\" and quote == '"' and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        if char == "\n":
            line += 1
        out.append(char)
        i += 1
    return None, len(text), line


def _expand(value: str, values: Mapping[str, str], env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = values.get(name, env.get(name))
        if found:
            return found
        return default or ""

    return _EXPAND.sub(substitute, value)
