"""What the server was started to allow: who may call it, and which folders it may load.

:class:`AccessPolicy` says which ``Host`` and ``Origin`` headers are served, the bearer token and
the body size limit (the :class:`~llamactl.server.apiserver.guard.RequestGuard` applies it).
:class:`DeploymentRoots` says under which folders ``/deployments/create`` may load a deployment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from llamactl.server import sizes
from llamactl.server.apiserver.errors import Forbidden
from llamactl.server.apiserver.listen import is_loopback
from llamactl.server.errors import InvalidRequest

__all__ = ["DEFAULT_MAX_BODY_SIZE", "AccessPolicy", "DeploymentRoots", "parse_size", "split_host"]

DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
"""4 MiB: far more than a deployment file or a task input needs."""

_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def split_host(header: str) -> tuple[str, str | None]:
    """``Host`` header -> (lower-case name without brackets, port or None); ("", None) if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return "", None
        return name, rest[1:] or None
    name, sep, port = value.rpartition(":")
    if not sep:
        return value, None
    if not port.isdigit() or ":" in name:
        return "", None
    return name, port


def _host_pattern(value: str) -> str:
    """A ``--allowed-host`` value, checked and normalized (lower case, no brackets)."""
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "*" or _NAME.fullmatch(host):
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise InvalidRequest(
            f"--allowed-host {value!r} is not a host name: give a name (example.com), a wildcard "
            "(*.example.com), an IP address, or * for any host, without a port"
        ) from None


def _origin(value: str) -> str:
    """A ``--allow-origin`` value, checked and normalized to ``scheme://host[:port]``."""
    origin = value.strip().rstrip("/").lower()
    parts = urlsplit(origin)
    if origin in ("*", "null") or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"--allow-origin {value!r} is not an origin: give scheme://host[:port] of the page that "
            "may call the API, e.g. http://localhost:3000 (neither * nor null: any page could claim those)"
        )
    if parts.path or parts.query or parts.fragment or parts.username:
        raise InvalidRequest(f"--allow-origin {value!r}: give only scheme://host[:port], no path")
    return origin


@dataclass(frozen=True)
class AccessPolicy:
    """Which requests the HTTP API serves.

    Attributes:
        token: when set, every request but ``GET /healthz`` needs ``Authorization: Bearer <token>``.
        allowed_hosts: ``Host`` names served besides loopback ones (``localhost``, 127.0.0.0/8,
            ``::1``): names, ``*.example.com`` wildcards, IP addresses, or ``*`` for any.
        allowed_origins: origins (``http://localhost:3000``) whose pages may call the API from a
            browser. A request with another ``Origin`` is refused, unless it is the server's own.
        max_body_size: the largest request body accepted, in bytes.

    Example::

        AccessPolicy(token="s3cret", allowed_hosts=("myhost.lan",)).with_bind_host("0.0.0.0")
    """

    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    _exact: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = tuple(dict.fromkeys(_host_pattern(h) for h in self.allowed_hosts))
        origins = tuple(dict.fromkeys(_origin(o) for o in self.allowed_origins))
        if self.max_body_size < 1:
            raise InvalidRequest(f"--max-body-size must be at least 1 byte, got {self.max_body_size}")
        if "*" in hosts and not self.token:
            raise InvalidRequest(
                "--allowed-host '*' serves requests for any host name, which lets any web page reach the "
                "server through DNS rebinding: also pass --token (or LLAMACTL_API_TOKEN), or list the names"
            )
        object.__setattr__(self, "allowed_hosts", hosts)
        object.__setattr__(self, "allowed_origins", origins)
        object.__setattr__(self, "_exact", frozenset(h for h in hosts if not h.startswith("*")))
        object.__setattr__(self, "_suffixes", tuple(h[1:] for h in hosts if h.startswith("*.")))

    def with_bind_host(self, host: str) -> AccessPolicy:
        """This policy, also serving the name or address the server binds to (unless a wildcard)."""
        bare = host.strip().strip("[]").lower()
        if bare in _WILDCARDS or is_loopback(bare) or bare in self._exact:
            return self
        return replace(self, allowed_hosts=(*self.allowed_hosts, bare))

    @property
    def any_host(self) -> bool:
        return "*" in self.allowed_hosts

    def host_allowed(self, header: str) -> bool:
        """Whether a request whose ``Host`` header is ``header`` is served."""
        name, _ = split_host(header)
        if not name:
            return False
        if self.any_host or name in self._exact or is_loopback(name):
            return True
        return any(name.endswith(suffix) for suffix in self._suffixes)

    def origin_allowed(self, origin: str, scheme: str, host_header: str) -> bool:
        """Whether a browser request from ``origin`` is served: a listed origin, or the server's own."""
        normalized = origin.strip().rstrip("/").lower()
        return normalized in self.allowed_origins or normalized == f"{scheme}://{host_header.strip().lower()}"


@dataclass(frozen=True)
class DeploymentRoots:
    """The folders under which ``/deployments/create`` may load a deployment (resolved, symlinks followed)."""

    folders: tuple[Path, ...] = ()

    @classmethod
    def of(cls, files: Iterable[Path], extra: Sequence[Path] = ()) -> DeploymentRoots:
        """The folders of ``files`` (given to ``serve``) plus the ``--deployments-root`` folders.

        Raises:
            InvalidRequest: a ``--deployments-root`` is not an existing folder.
        """
        for folder in extra:
            if not Path(folder).is_dir():
                raise InvalidRequest(
                    f"--deployments-root {folder} is not a folder: create it, or give an existing one"
                )
        found = [Path(f).resolve().parent for f in files] + [Path(f).resolve() for f in extra]
        return cls(tuple(dict.fromkeys(found)))

    def check(self, base_path: Path) -> Path:
        """``base_path`` resolved, if it lies under one of the roots.

        Raises:
            Forbidden: it does not (the message lists the roots and how to add one).
        """
        resolved = base_path.resolve()
        if any(resolved.is_relative_to(root) for root in self.folders):
            return resolved
        where = (
            ", ".join(str(r) for r in self.folders) if self.folders else "none: it was started with no file"
        )
        raise Forbidden(
            f"base_path {resolved} is outside the folders this server may load deployments from "
            f"({where}): move the deployment under one of them, or start the server with "
            "--deployments-root DIR (or a deployment file in that folder)"
        )


def parse_size(text: str) -> int:
    """:func:`llamactl.server.sizes.parse_size` for ``--max-body-size``.

    Raises:
        InvalidRequest: not a size.
    """
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise InvalidRequest(f"--max-body-size {exc}") from None
