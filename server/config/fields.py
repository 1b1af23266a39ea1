"""Field types of the deployment file, each with a message that says what would be valid.

The validators raise ``ValueError`` (the only exception pydantic turns into a validation error, so
also for wrong types) with the whole user-facing message; the loader turns it into a
:class:`~llamactl.server.errors.DeploymentConfigError` with the key path and line.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, Field

from llamactl.server.sizes import parse_size, show_size

__all__ = [
    "EnvMap",
    "Identifier",
    "ImportPath",
    "MemorySize",
    "Port",
    "PortOrZero",
    "PositiveNumber",
    "ResultSize",
    "WholeAtLeastOne",
    "WholeAtLeastZero",
    "accepted_keys",
    "describe",
    "keys",
]

_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_IMPORT_PATH = re.compile(rf"(?:(?:[A-Za-z0-9_.-]+/)*){_MODULE}:[A-Za-z_][A-Za-z0-9_]*")


def keys(*spellings: str) -> AliasChoices:
    """Accept each YAML spelling of a key plus its underscore form (``max-concurrency``, ...)."""
    choices: list[str] = []
    for spelling in spellings:
        for variant in (spelling, spelling.replace("-", "_")):
            if variant not in choices:
                choices.append(variant)
    return AliasChoices(*choices)


def accepted_keys(model: type[BaseModel]) -> dict[str, str]:
    """Every key spelling ``model`` reads, mapped to the spelling to suggest (the first alias)."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        spellings = (
            [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
        )
        spellings.append(name)
        for spelling in spellings:
            out.setdefault(spelling, spellings[0])
    return out


def describe(value: Any) -> str:
    """A short rendering of a YAML value for messages: ``'lokal'``, ``0``, ``a list``."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if len(value) <= 60 else f"'{value[:57]}...'"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _whole_number(minimum: int, maximum: int | None = None, what: str = "a whole number") -> BeforeValidator:
    if maximum is not None:
        expected = f"expected {what} between {minimum} and {maximum}"
    else:
        expected = f"expected {what} >= {minimum}"

    def check(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            number = int(value.strip())
        if number is None or number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"{expected}, got {describe(value)}")
        return number

    return BeforeValidator(check)


def _size(minimum: int, maximum: int) -> BeforeValidator:
    expected = f"expected a size from {show_size(minimum)} to {show_size(maximum)} (bytes, or e.g. 512K, 64M)"

    def check(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = parse_size(value)
            except ValueError:
                number = None
        if number is None or not minimum <= number <= maximum:
            raise ValueError(f"{expected}, got {describe(value)}")
        return number

    return BeforeValidator(check)


def _positive_number(value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a number of seconds > 0, got {describe(value)}")
    return number


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            f"'{value}' cannot be used in URLs and topic names: use letters, digits, '-', '_' and '.' "
            "(not starting with '.' or '-')"
        )
    return value


def _import_path(value: str) -> str:
    example = "e.g. 'workflow:echo_workflow', 'pkg.module:app' or 'src/workflow:echo_workflow'"
    module = value.partition(":")[0]
    if PurePosixPath(module).is_absolute() or PureWindowsPath(module).is_absolute():
        raise ValueError(f"import path '{value}' must be relative to the deployment folder ({example})")
    if ".." in PurePosixPath(module).parts:
        raise ValueError(f"import path '{value}' must not leave the deployment folder with '..' ({example})")
    if not _IMPORT_PATH.fullmatch(value.removeprefix("./")):
        raise ValueError(f"import path '{value}' must look like module:attr ({example})")
    return value


def _env_map(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of NAME: value, got {describe(value)}")  # noqa: TRY004
    return {str(key): item for key, item in value.items()}


def _env_value(value: Any) -> str:
    """YAML turns ``PORT: 8080`` into an int and ``DEBUG: true`` into a bool; env values are text."""
    if isinstance(value, dict | list):
        raise ValueError(f"an env value must be text, a number or true/false, got {describe(value)}")  # noqa: TRY004
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


WholeAtLeastOne = Annotated[int, _whole_number(1)]
ResultSize = Annotated[int, _size(1024, 512 * 1024**2)]
"""The largest message a task's worker may send (its result with its Context, or one event):
up to 512 MB, below every message queue's own limit (Redis's 512 MB, the embedded one's 1 GB)."""
MemorySize = Annotated[int, _size(64 * 1024**2, 1024**4)]
"""Memory a worker may hold before it is replaced: from 64 MB (a worker holds ~50 MB before
its first task) to 1 TB."""
WholeAtLeastZero = Annotated[int, _whole_number(0)]
Port = Annotated[int, _whole_number(1, 65535, "a port number")]
PortOrZero = Annotated[int, _whole_number(0, 65535, "a port number (0 = any free port)")]
PositiveNumber = Annotated[float, BeforeValidator(_positive_number)]
Identifier = Annotated[str, Field(min_length=1), AfterValidator(_identifier)]
ImportPath = Annotated[str, AfterValidator(_import_path)]
EnvMap = Annotated[dict[str, Annotated[str, BeforeValidator(_env_value)]], BeforeValidator(_env_map)]
