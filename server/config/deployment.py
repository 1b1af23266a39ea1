"""``DeploymentConfig``: one deployment file, validated, plus the paths and env derived from it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from llamactl.server.config.env_files import EnvFileError, parse_env_file
from llamactl.server.config.fields import Identifier, describe, keys
from llamactl.server.config.models import (
    ControlPlaneConfig,
    MessageQueueConfig,
    ServiceConfig,
    SourceType,
    _Model,
)
from llamactl.server.config.paths import git_checkout_in, resolve_inside, resolve_under
from llamactl.server.config.yaml_lines import KeyPath, LineIndex, format_key_path
from llamactl.server.errors import DeploymentConfigError, ServiceNotFound

__all__ = ["STATE_STORE_ENV", "DeploymentConfig"]


STATE_STORE_ENV = "CONTROL_PLANE_STATE_STORE_URI"
"""The state store URI when the deployment file names none (Llama Deploy's variable)."""


class DeploymentConfig(_Model):
    """A deployment file: Llama Deploy's keys plus ours.

    Build it with :func:`llamactl.server.config.load_deployment_file` or
    :func:`llamactl.server.config.load_deployment_text`; they fill ``file`` and ``base_path`` and make
    every error name the key path and line.
    """

    name: Identifier
    """Deployment name, used in URLs and topic names."""
    control_plane: ControlPlaneConfig = Field(
        default_factory=ControlPlaneConfig, validation_alias=keys("control-plane")
    )
    message_queue: MessageQueueConfig = Field(
        default_factory=MessageQueueConfig, validation_alias=keys("message-queue")
    )
    services: dict[str, ServiceConfig]
    """Services by id, in file order."""
    default_service: str | None = Field(default=None, validation_alias=keys("default-service"))
    ui: dict[str, Any] | None = None
    """Llama Deploy's Next.js UI section: accepted, not run."""
    file: Path | None = None
    """The file this came from (None when loaded from text)."""
    base_path: Path = Field(default_factory=Path.cwd)
    """Folder that local sources, import paths and env files are resolved against."""

    _lines: LineIndex | None = PrivateAttr(default=None)
    _label: str = PrivateAttr(default="<string>")

    @field_validator("control_plane", "message_queue", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("services", mode="before")
    @classmethod
    def _services_with_ids(cls, value: Any) -> Any:
        if value is None or value == {}:
            raise ValueError("no services are defined: add at least one under 'services:'")
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of service id to service, got {describe(value)}")  # noqa: TRY004
        out: dict[str, Any] = {}
        for service_id, body in value.items():
            settings = {} if body is None else body
            out[str(service_id)] = (
                {**settings, "id": str(service_id)} if isinstance(settings, dict) else settings
            )
        return out

    @field_validator("default_service")
    @classmethod
    def _default_is_a_service(cls, value: str | None, info: ValidationInfo) -> str | None:
        services = info.data.get("services")
        if value is not None and services is not None and value not in services:
            known = ", ".join(services) or "(none)"
            raise ValueError(f"'{value}' is not one of the services: use one of {known}")
        return value

    @model_validator(mode="after")
    def _absolute_base(self) -> DeploymentConfig:
        self.base_path = self.base_path.absolute()
        return self

    # --- lookups -------------------------------------------------------------------------------

    def service(self, service_id: str) -> ServiceConfig:
        """The service with this id.

        Raises:
            ServiceNotFound: no service has this id (the message lists the known ones).
        """
        try:
            return self.services[service_id]
        except KeyError:
            raise ServiceNotFound(service_id, self.name, list(self.services)) from None

    @property
    def default_service_id(self) -> str | None:
        """``default-service``, else the first service in file order (Llama Deploy 0.9)."""
        if self.default_service is not None:
            return self.default_service
        return next(iter(self.services), None)

    @property
    def state_dir(self) -> Path:
        """Where llamactl keeps this deployment's state: ``<base_path>/.llamactl``."""
        return self.base_path / ".llamactl"

    @property
    def state_store_uri(self) -> str:
        """``control-plane.state_store_uri``, else ``$CONTROL_PLANE_STATE_STORE_URI``, else an SQLite
        file under :attr:`state_dir`.

        A ``postgresql://`` URI without ``?schema=`` gets ``llamactl_<deployment name>``.

        Raises:
            DeploymentConfigError: an ``sqlite://`` file outside the deployment folder.
        """
        # Llama Deploy's ControlPlaneConfig reads CONTROL_PLANE_STATE_STORE_URI; the file wins.
        uri = self.control_plane.state_store_uri or os.environ.get(STATE_STORE_ENV) or None
        if uri is None:
            return f"sqlite:///{self.state_dir}/state.sqlite"
        parts = urlsplit(uri)
        if parts.scheme.lower() in ("postgresql", "postgres") and "schema" not in parse_qs(parts.query):
            # Each deployment keeps its own schema unless the file names one: two deployments on
            # one database never mix their tasks; two servers of one deployment share them.
            schema = "llamactl_" + re.sub(r"[^a-z0-9_]", "_", self.name.lower())
            query = f"{parts.query}&schema={schema[:63]}" if parts.query else f"schema={schema[:63]}"
            return urlunsplit(parts._replace(query=query))
        path = parts.path[1:] if parts.path.startswith("/") else ""
        if parts.scheme.lower() == "sqlite" and not parts.netloc and path and path != ":memory:":
            # As the state store opens it: a relative path is relative to the current folder.
            target = (Path.cwd() / path).resolve()
            if not target.is_relative_to(self.base_path.resolve()):
                where = self._spelling(("control-plane",), "state-store-uri", "state_store_uri")
                section = self._spelling((), "control-plane", "control_plane")
                raise self._error(
                    (*section, where[-1]),
                    f"the SQLite file {target} is outside the deployment folder {self.base_path.resolve()}: "
                    "keep it inside (e.g. leave state-store-uri out for .llamactl/state.sqlite)",
                )
        return uri

    # --- paths and environment -----------------------------------------------------------------

    def source_dir(self, service_id: str) -> Path:
        """The absolute folder of a service's local source (``base_path`` when it has no source).

        Raises:
            ServiceNotFound: unknown service id.
            DeploymentConfigError: the source is not local, leaves ``base_path`` (``..``, an
                absolute path, or a symlink pointing out), or does not exist.
        """
        service = self.service(service_id)
        if service.source is None:
            return self.base_path
        if service.source.type is SourceType.GIT:
            return self._git_checkout(service_id)
        if service.source.type is not SourceType.LOCAL:
            raise self._error(
                ("services", service_id, "source", "type"),
                f"'{service.source.type}' sources are not run by llamactl yet: "
                "check the code out next to the deployment file and use 'type: local'",
            )
        try:
            return resolve_inside(self.base_path, service.source.location, "the local source")
        except ValueError as exc:
            where = self._spelling(("services", service_id, "source"), "location", "name")
            raise self._error(where, str(exc)) from None

    def git_sources_dir(self, service_id: str) -> Path:
        """Where a git source's checkouts are kept: ``.llamactl/sources/<service>/<commit>``, the
        one in use named by the ``CURRENT`` file beside them."""
        return self.state_dir / "sources" / service_id

    def _git_checkout(self, service_id: str) -> Path:
        root = self.git_sources_dir(service_id)
        source = self.service(service_id).source
        name = git_checkout_in(root, source.location) if source is not None else None
        if name is None:
            raise self.source_error(
                service_id,
                "its git source is not checked out yet (`llamactl serve`, `deploy` and `validate` "
                "clone it into .llamactl/sources/)",
            )
        return root / name

    def source_error(self, service_id: str, problem: str) -> DeploymentConfigError:
        """An error about a service's ``source`` (its location), with the file and line."""
        return self._error(self._spelling(("services", service_id, "source"), "location", "name"), problem)

    def import_root(self, service_id: str) -> Path:
        """The folder a service's import path is relative to.

        Llama Deploy 0.8/0.9 resolve ``import-path`` against the deployment folder
        (``source: src`` with ``path: src/workflow:app``); a path written relative to the source
        folder (``workflow:app``) works too. The source folder wins when the module is found there.

        Raises:
            DeploymentConfigError: the module's folder, file or package resolves outside the
                deployment folder (a symlink pointing out).
        """
        source = self.source_dir(service_id)
        import_path = self.service(service_id).import_path
        if import_path is None:
            return source
        module = import_path.partition(":")[0]
        folder, _, dotted = module.rpartition("/")
        parts = dotted.removesuffix(".py").split(".")
        roots = [source] if source == self.base_path else [source, self.base_path]
        for root in roots:
            candidate = root / folder / parts[0]
            if candidate.is_dir() or candidate.with_suffix(".py").is_file():
                self._check_module_inside(service_id, import_path, root / folder, parts)
                return root
        return source

    def _check_module_inside(self, service_id: str, import_path: str, folder: Path, parts: list[str]) -> None:
        inside = self.base_path.resolve()
        # Every package on the way counts, not only the top one: `pkg.flows` imports pkg/flows.py.
        modules = [folder.joinpath(*parts[: depth + 1]) for depth in range(len(parts))]
        for path in (folder, *(p for module in modules for p in (module, module.with_suffix(".py")))):
            if path.exists() and not path.resolve().is_relative_to(inside):
                where = self._spelling(("services", service_id), "import-path", "path")
                raise self._error(
                    where,
                    f"import path '{import_path}' leads to {path.resolve()}, outside the deployment folder "
                    f"{inside} (a symlink pointing out is not allowed): keep the code inside it",
                )

    def service_env(self, service_id: str) -> dict[str, str]:
        """The service's ``env`` overridden by its ``env-files`` (later files win).

        An env file is looked up in the service's source folder, then in ``base_path``.

        Raises:
            ServiceNotFound: unknown service id.
            DeploymentConfigError: an env file is missing or has a malformed line.
        """
        service = self.service(service_id)
        env = dict(service.env)
        if not service.env_files:
            return env
        roots = [self.base_path]
        if service.source is not None and service.source.type in (SourceType.LOCAL, SourceType.GIT):
            roots.insert(0, self.source_dir(service_id))
        for index, entry in enumerate(service.env_files):
            where = (*self._spelling(("services", service_id), "env-files", "env_files"), index)
            try:
                candidates = [resolve_under(root, self.base_path, entry, "env file") for root in roots]
            except ValueError as exc:
                raise self._error(where, str(exc)) from None
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                looked = " or ".join(str(root) for root in dict.fromkeys(roots))
                raise self._error(where, f"env file '{entry}' not found in {looked}")
            try:
                env.update(parse_env_file(found))
            except EnvFileError as exc:
                raise self._error(where, f"{found}:{exc.line}: {exc.problem}") from None
            except UnicodeDecodeError:
                raise self._error(where, f"cannot read env file {found}: it is not UTF-8 text") from None
            except OSError as exc:
                raise self._error(
                    where, f"cannot read env file {found}: {exc.strerror or 'unreadable'}"
                ) from None
        return env

    # --- error helpers -------------------------------------------------------------------------

    def service_key_error(self, service_id: str, key: str, problem: str) -> DeploymentConfigError:
        """An error at ``services.<service_id>.<key>`` (dashed key; the file's spelling is used)."""
        return self._error(self._spelling(("services", service_id), key, key.replace("-", "_")), problem)

    def _spelling(self, parent: KeyPath, *spellings: str) -> KeyPath:
        """The key path with the spelling the file used (the first one when absent)."""
        for spelling in spellings:
            if self._lines is not None and self._lines.exact((*parent, spelling)) is not None:
                return (*parent, spelling)
        return (*parent, spellings[0])

    def _error(self, path: KeyPath, problem: str) -> DeploymentConfigError:
        line = self._lines.line(path) if self._lines is not None else None
        return DeploymentConfigError(self._label, format_key_path(path), line, problem)
