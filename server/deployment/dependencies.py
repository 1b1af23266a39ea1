"""A deployment's ``python-dependencies``, installed into its own virtual environment.

Installing runs code from the network (setup scripts, build hooks) as the user, so it happens
only on a server started with ``--allow-install``; otherwise a deployment that lists
dependencies is refused with a config error naming the flag. The server's own interpreter is
never touched: dependencies go into ``<deployment folder>/.llamactl/venv`` (made on first use),
whose ``_llamactl_server.pth`` appends the server's site-packages after the venv's own, so the
workers still import llamactl, workflows, pydantic... while what the deployment installed wins.
The deployment's workers then run with that venv's python.

Entries follow Llama Deploy 0.9: one ending in ``requirements.txt`` is installed with ``-r``
(relative to the service's source folder); one that names an existing folder or file inside the
source folder is installed from that path; anything else is a package spec (``httpx>=0.27``).
Specs already satisfied (by the venv or the server's packages) are skipped by pip itself.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import platform
import site
import sys
import sysconfig
import venv
from pathlib import Path
from typing import IO

from llamactl.server.config import DeploymentConfig, ServiceConfig
from llamactl.server.errors import DeploymentConfigError, LlamactlError

__all__ = ["install_python_dependencies", "pip_arguments", "server_site_dirs", "venv_python"]

log = logging.getLogger(__name__)

_PTH = "_llamactl_server.pth"


def pip_arguments(
    dependencies: list[str], source_dir: Path, base_path: Path, *, file: str, key: str
) -> list[str]:
    """The ``pip install`` arguments for ``dependencies``.

    Paths are looked up in the service's source folder, then in the deployment folder (Llama
    Deploy 0.9 resolves them there), and must stay inside the deployment folder (symlinks followed).
    """
    args: list[str] = []
    base = base_path.resolve()
    for entry in dependencies:
        looks_like_path = entry.endswith("requirements.txt") or "/" in entry or entry.startswith(".")
        if not looks_like_path:
            if entry.startswith("-"):
                raise DeploymentConfigError(
                    file, key, None, f"'{entry}' is a pip option: list packages, paths or requirements.txt"
                )
            args.append(entry)
            continue
        candidates = [(source_dir.resolve() / entry).resolve(), (base / entry).resolve()]
        if any(not c.is_relative_to(base) for c in candidates):
            raise DeploymentConfigError(file, key, None, f"'{entry}' points outside the deployment folder")
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise DeploymentConfigError(
                file,
                key,
                None,
                f"'{entry}' exists neither in {source_dir} nor in {base}",
            )
        args.extend(["-r", str(path)] if entry.endswith("requirements.txt") else [str(path)])
    return args


def venv_python(folder: Path) -> Path:
    """The python executable of the virtual environment in ``folder``."""
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def server_site_dirs() -> list[str]:
    """The site-packages folders this server imports from (its venv's, the system's, the user's)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d) and d in sys.path]


def _venv_site_packages(folder: Path) -> Path:
    return Path(
        sysconfig.get_path("purelib", scheme="venv", vars={"base": str(folder), "platbase": str(folder)})
    )


def _is_current(folder: Path) -> bool:
    """Whether the venv in ``folder`` exists and was made by this Python version."""
    cfg = folder / "pyvenv.cfg"
    if not venv_python(folder).exists() or not cfg.is_file():
        return False
    for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip() == platform.python_version()
    return False


class _FileLock:
    """An exclusive lock on a file: two servers (or two deployments of one folder) must not build
    or install into the same venv at once."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Block until the lock is ours (call it in a thread)."""
        handle = self._path.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _prepare_venv(folder: Path) -> Path:
    """Make (or refresh) the venv in ``folder``; return its python. Blocking: run it in a thread."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not _is_current(folder):
        log.info("making the virtual environment %s", folder)
        try:
            venv.EnvBuilder(with_pip=True, clear=True, symlinks=os.name != "nt").create(folder)
        except Exception as exc:
            raise LlamactlError(
                f"cannot make the virtual environment {folder} for python-dependencies: {exc} (on "
                "Debian and Ubuntu, install python3-venv)"
            ) from None
    lines = [f"import site; site.addsitedir({d!r})" for d in server_site_dirs()]
    (_venv_site_packages(folder) / _PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return venv_python(folder)


async def _pip_install(python: Path, service: ServiceConfig, args: list[str]) -> None:
    log.info("service %s: installing %s", service.id, " ".join(args))
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(output.decode(errors="replace").strip().splitlines()[-15:])
        raise LlamactlError(
            f"service '{service.id}': installing python-dependencies failed (pip exit code "
            f"{proc.returncode}); fix the entries or install them yourself:\n{tail}"
        )


async def install_python_dependencies(config: DeploymentConfig, *, allow_install: bool) -> Path | None:
    """Install every service's python-dependencies into the deployment's venv; return its python.

    Returns None when no service lists any (the workers run with the server's interpreter).

    Raises:
        DeploymentConfigError: a service lists dependencies but ``allow_install`` is off, or an
            entry is a path outside the deployment folder or missing.
        LlamactlError: the venv cannot be made, or pip failed (with pip's last lines).
    """
    services = [s for s in config.services.values() if s.python_dependencies]
    if not services:
        return None
    if not allow_install:
        raise config.service_key_error(
            services[0].id,
            "python-dependencies",
            "installing python-dependencies is off on this server: start it with --allow-install to "
            "install them into the deployment's own virtual environment (.llamactl/venv), or install "
            "them into the server's environment yourself and remove the entry",
        )
    plans = [
        (
            service,
            pip_arguments(
                service.python_dependencies,
                config.source_dir(service.id),
                config.base_path,
                file=str(config.file or "<deployment>"),
                key=f"services.{service.id}.python-dependencies",
            ),
        )
        for service in services
    ]
    config.state_dir.mkdir(parents=True, exist_ok=True)
    lock = _FileLock(config.state_dir / "venv.lock")
    await asyncio.to_thread(lock.acquire)
    try:
        python = await asyncio.to_thread(_prepare_venv, config.state_dir / "venv")
        for service, args in plans:
            await _pip_install(python, service, args)
    finally:
        lock.release()
    return python
