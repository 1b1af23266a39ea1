"""Turn a pydantic ``ValidationError`` into a ``DeploymentConfigError`` a person can act on."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from llamactl.server.config.fields import describe
from llamactl.server.config.yaml_lines import KeyPath, LineIndex, format_key_path
from llamactl.server.errors import DeploymentConfigError

__all__ = ["translate_validation_error"]

_MISSING_HINTS = {
    "type": ": use one of local, git, docker",
    "location": " (the folder or repository; Llama Deploy 0.8 calls it 'name')",
    "services": ": map each service id to its settings, e.g. 'services: {echo: {import-path: ...}}'",
    "name": ": the deployment name, used in URLs (letters, digits, '-', '_', '.')",
}


def translate_validation_error(exc: ValidationError, file: str, lines: LineIndex) -> DeploymentConfigError:
    """The first problem in file order, with its key path, line and a message saying what is valid.

    A required key that is missing because it is misspelled (``sevices:``) is reported at the
    misspelling, which the message names.
    """
    errors = exc.errors(include_url=False)
    located = [(lines.line(_key_path(err["loc"])), i, err) for i, err in enumerate(errors)]
    line, _, first = min(located, key=lambda item: (item[0], item[1]))
    problem = _problem(first)
    if first["type"] == "missing":
        path = _key_path(first["loc"])
        typo = _misspelling(lines, path)
        if typo is not None:
            written, line = typo
            looks = f"'{written}' on line {line} looks like a misspelling of it"
            problem = f"missing required key '{path[-1]}': {looks}"
    if len(errors) > 1:
        more = len(errors) - 1
        problem += f" (and {more} more problem{'s' if more > 1 else ''} after this one)"
    return DeploymentConfigError(file, format_key_path(_key_path(first["loc"])), line, problem)


def _misspelling(lines: LineIndex, path: KeyPath) -> tuple[str, int] | None:
    """A key written next to the missing ``path`` whose spelling is close to it, and its line."""
    if not path or not isinstance(path[-1], str):
        return None
    parent, wanted = path[:-1], path[-1]
    siblings = {
        str(key[-1]): line
        for key, line in lines.lines.items()
        if len(key) == len(path) and key[:-1] == parent and isinstance(key[-1], str)
    }
    close = difflib.get_close_matches(wanted, list(siblings), n=1, cutoff=0.75)
    return (close[0], siblings[close[0]]) if close else None


def _key_path(loc: tuple[Any, ...]) -> KeyPath:
    path: list[str | int] = [p for p in loc if p != "[key]"]
    # A service's id is its key under services:, not a key of its own.
    if len(path) == 3 and path[0] == "services" and path[2] == "id":
        path.pop()
    return tuple(path)


def _problem(err: ErrorDetails) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        key = str(err["loc"][-1])
        return f"missing required key '{key}'{_MISSING_HINTS.get(key, '')}"
    if kind in {"value_error", "assertion_error"}:
        ctx = err.get("ctx") or {}
        return str(ctx.get("error", err["msg"]))
    if kind == "string_type":
        hint = " (put it in quotes)" if isinstance(value, int | float | bool) else ""
        return f"expected text, got {describe(value)}{hint}"
    if kind in {"string_too_short", "too_short"}:
        return "expected a value, got an empty one"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping of key: value lines, got {describe(value)}"
    if kind in {"list_type", "tuple_type", "set_type"}:
        return f"expected a list, got {describe(value)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {describe(value)}"
    if kind.startswith(("int_", "float_")):
        return f"expected a number, got {describe(value)}"
    return f"{err['msg']}, got {describe(value)}"
