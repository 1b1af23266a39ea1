"""Read a deployment file into a :class:`DeploymentConfig`, or say exactly what is wrong with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llamactl.server.config.deployment import DeploymentConfig
from llamactl.server.config.fields import describe
from llamactl.server.config.messages import translate_validation_error
from llamactl.server.config.unknown_keys import warn, warn_unknown_keys
from llamactl.server.config.yaml_lines import LineIndex, format_key_path, parse_yaml
from llamactl.server.errors import DeploymentConfigError

__all__ = ["load_deployment_file", "load_deployment_text"]

_UNSUPPORTED_QUEUES = ("rabbitmq", "kafka", "aws", "solace")


def load_deployment_file(path: str | os.PathLike[str], *, base_path: Path | None = None) -> DeploymentConfig:
    """Load and validate the deployment file at ``path``.

    Args:
        path: the YAML file (Llama Deploy 0.8 and 0.9 files load unchanged).
        base_path: folder that sources are resolved against; the file's folder by default.

    Raises:
        DeploymentConfigError: the file is missing, unreadable, not YAML, or invalid; the error
            names the file, the key path and the line.

    Warns:
        DeploymentConfigWarning: for keys that are ignored (unknown keys, ``ui``).
    """
    label = os.fspath(path)
    file = Path(path).absolute()
    if not file.exists():
        raise DeploymentConfigError(label, "", None, f"no such file (looked for {file})")
    if file.is_dir():
        found = sorted(p.name for p in file.iterdir() if p.suffix in {".yml", ".yaml"})
        hint = f", e.g. {file / found[0]}" if found else ""
        raise DeploymentConfigError(
            label, "", None, f"this is a folder, not a file: pass the deployment YAML file{hint}"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DeploymentConfigError(label, "", None, "not a text file: expected UTF-8 YAML") from None
    except OSError as exc:
        raise DeploymentConfigError(label, "", None, f"cannot read the file: {exc.strerror or exc}") from None
    return _load(text, label, file, base_path if base_path is not None else file.parent)


def load_deployment_text(text: str, *, base_path: Path, file: str = "<string>") -> DeploymentConfig:
    """Load and validate a deployment from YAML ``text`` (e.g. one uploaded to the API).

    Args:
        text: the YAML.
        base_path: folder that sources are resolved against.
        file: the name used in error messages.

    Raises:
        DeploymentConfigError: the text is not YAML or is invalid (with key path and line).
    """
    return _load(text, file, None, base_path)


def _load(text: str, label: str, file: Path | None, base_path: Path) -> DeploymentConfig:
    data, lines = parse_yaml(text, label)
    if not isinstance(data, dict):
        raise DeploymentConfigError(
            label,
            "",
            lines.root_line,
            f"the top level must be a mapping with keys like 'name:' and 'services:', got {describe(data)}",
        )
    _check_names_stay_text(lines, label)
    _env_values_as_written(data, lines)
    warn_unknown_keys(data, lines, label)
    # These two come from where the file is, never from its content.
    fields: dict[Any, Any] = {k: v for k, v in data.items() if k not in ("file", "base_path")}
    try:
        config = DeploymentConfig.model_validate({**fields, "file": file, "base_path": Path(base_path)})
    except ValidationError as exc:
        raise translate_validation_error(exc, label, lines) from None
    config._lines = lines
    config._label = label
    _warn_unsupported_queue(config, data, lines, label)
    _check_remote_only_services(config)
    return config


def _check_names_stay_text(lines: LineIndex, label: str) -> None:
    """Refuse a service id or env name that YAML reads as another value (``yes:`` is true, ``010:``
    is 8): the service would be called ``True``, and errors about it could not find its line."""
    for path, line in lines.not_text:
        if path[0] != "services" or not (len(path) == 2 or (len(path) == 4 and path[2] == "env")):
            continue
        written = str(path[-1])
        value = yaml.safe_load(written)
        if str(value) == written:
            continue
        what = "service id" if len(path) == 2 else "env name"
        raise DeploymentConfigError(
            label,
            format_key_path(path),
            line,
            f"the {what} '{written}' reads as {describe(value)} in YAML, not as text: "
            f"put it in quotes ('{written}':)",
        )


def _env_values_as_written(data: dict[Any, Any], lines: LineIndex) -> None:
    """Env values are text: ``COUNTRY: NO``, ``VERSION: 1.10`` and ``ZIP: 02134`` are passed as
    written, not as the false, 1.1 and 1116 YAML 1.1 reads them as."""
    services = data.get("services")
    if not isinstance(services, dict):
        return
    for service_id, body in services.items():
        if isinstance(body, dict) and isinstance(body.get("env"), dict):
            path = ("services", str(service_id), "env")
            body["env"] = {
                name: lines.written.get((*path, str(name)), value) for name, value in body["env"].items()
            }


def _check_remote_only_services(config: DeploymentConfig) -> None:
    """``replicas: 0`` leaves a service to `llamactl worker` on other hosts, which only a shared
    message queue lets in: on the embedded one its tasks would wait for ever."""
    if config.message_queue.type != "zeromq":
        return
    for service in config.services.values():
        if service.replicas == 0:
            raise config.service_key_error(
                service.id,
                "replicas",
                "0 leaves the service to `llamactl worker` on other hosts, which cannot reach the embedded "
                "zeromq queue: set replicas >= 1, or share the queue with `message-queue: {type: redis, "
                "url: redis://HOST:6379}`",
            )


def _warn_unsupported_queue(
    config: DeploymentConfig, data: dict[Any, Any], lines: LineIndex, label: str
) -> None:
    kind = config.message_queue.type
    if kind in _UNSUPPORTED_QUEUES:
        section = "message-queue" if "message-queue" in data else "message_queue"
        warn(
            label,
            lines,
            (section, "type"),
            f"'{kind}' is accepted for Llama Deploy compatibility but llamactl has no {kind} backend: "
            "use zeromq (the default) or redis",
        )
