"""Warn about keys the loader does not read, with the closest valid key.

An unknown key is most often a typo (``replica:``), so it is worth a warning; it is not an error
because Llama Deploy ignores unknown keys and files written for it must keep loading.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from typing import Any

from pydantic import BaseModel

from llamactl.server.config.fields import accepted_keys
from llamactl.server.config.models import ControlPlaneConfig, MessageQueueConfig, ServiceConfig, ServiceSource
from llamactl.server.config.yaml_lines import KeyPath, LineIndex, format_key_path

__all__ = ["DeploymentConfigWarning", "warn", "warn_unknown_keys"]

_TOP_LEVEL = {
    "name": "name",
    "control-plane": "control-plane",
    "control_plane": "control-plane",
    "message-queue": "message-queue",
    "message_queue": "message-queue",
    "default-service": "default-service",
    "default_service": "default-service",
    "services": "services",
    "ui": "ui",
}

# Fields of Llama Deploy's queue backends (simple, redis, rabbitmq, kafka, aws, solace).
_QUEUE_BACKEND_KEYS = [
    *("client_kwargs", "raise_exceptions", "use_ssl"),
    *("db", "username", "password", "ssl", "exclusive_mode"),
    *("exchange_name", "vhost", "secure"),
    *("aws_region", "aws_access_key_id", "aws_secret_access_key"),
    *("vpn_name", "host_secured", "is_queue_temporary"),
    "prefix",  # ours: the redis queue's key prefix (default llamactl:<deployment>:)
]


class DeploymentConfigWarning(UserWarning):
    """Something in a deployment file is ignored (an unknown key, an unsupported section).

    Attributes mirror :class:`~llamactl.server.errors.DeploymentConfigError`: ``file``, ``key_path``,
    ``line`` and ``problem``.
    """

    def __init__(self, file: str, key_path: str, line: int | None, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.line = line
        self.problem = problem
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: '{key_path}': {problem}")


def warn(file: str, lines: LineIndex, path: KeyPath, problem: str) -> None:
    """Emit a :class:`DeploymentConfigWarning` for ``path``."""
    warning = DeploymentConfigWarning(file, format_key_path(path), lines.line(path), problem)
    # Point the warning at whoever called the loader, not at this package.
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "llamactl.server.config"
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


def warn_unknown_keys(data: dict[Any, Any], lines: LineIndex, file: str) -> None:
    """Warn once per key of ``data`` (a parsed deployment file) that nothing reads, and per duplicate."""
    for twice, first, last in lines.duplicates:
        warn(
            file,
            lines,
            twice,
            f"written twice (lines {first} and {last}): only the one on line {last} is used",
        )
    _check(data, _TOP_LEVEL, (), lines, file)
    _check_spellings(data, _TOP_LEVEL, (), lines, file)
    for spelling in ("control-plane", "control_plane"):
        _check_model(data.get(spelling), ControlPlaneConfig, (spelling,), lines, file)
    for spelling in ("message-queue", "message_queue"):
        queue_keys = accepted_keys(MessageQueueConfig)
        if isinstance(data.get(spelling), dict):
            _check_spellings(data[spelling], queue_keys, (spelling,), lines, file)
        for key in _QUEUE_BACKEND_KEYS:
            queue_keys.update({key: key, key.replace("_", "-"): key})
        section = data.get(spelling)
        if isinstance(section, dict):
            _check(section, queue_keys, (spelling,), lines, file)
    services = data.get("services")
    if isinstance(services, dict):
        service_keys = {k: v for k, v in accepted_keys(ServiceConfig).items() if k != "id"}
        for service_id, body in services.items():
            path: KeyPath = ("services", str(service_id))
            if isinstance(body, dict):
                _check(body, service_keys, path, lines, file)
                _check_spellings(body, service_keys, path, lines, file)
                _check_model(body.get("source"), ServiceSource, (*path, "source"), lines, file)
    if "ui" in data:
        warn(file, lines, ("ui",), "the 'ui' section (a Next.js app) is not run by llamactl and is ignored")


def _check_model(section: Any, model: type[BaseModel], path: KeyPath, lines: LineIndex, file: str) -> None:
    if isinstance(section, dict):
        _check(section, accepted_keys(model), path, lines, file)
        _check_spellings(section, accepted_keys(model), path, lines, file)


def _check_spellings(
    section: dict[Any, Any], known: dict[str, str], path: KeyPath, lines: LineIndex, file: str
) -> None:
    """Warn about a key written in two spellings (``max-concurrency``, ``max_concurrency``).

    ``known`` lists each key's spellings in the order the models read them: the first one in the
    section is used, wherever it is written.
    """
    spellings: dict[str, list[str]] = {}
    for spelling, key in known.items():
        if spelling in section:
            spellings.setdefault(key, []).append(spelling)
    for used, *others in spellings.values():
        for other in others:
            warn(
                file,
                lines,
                (*path, other),
                f"the same key as '{used}' on line {lines.line((*path, used))}: only that one is used",
            )


def _check(
    section: dict[Any, Any], known: dict[str, str], path: KeyPath, lines: LineIndex, file: str
) -> None:
    suggestions = sorted(set(known.values()))
    for key in section:
        if str(key) in known:
            continue
        close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{known[close[0]]}'?"
        else:
            hint = f"valid keys here are {', '.join(suggestions)}"
        warn(file, lines, (*path, str(key)), f"unknown key, ignored: {hint}")
