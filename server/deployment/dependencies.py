"""Installs a service's ``python-dependencies`` into the interpreter that runs its workers.

Entries follow Llama Deploy 0.9: one ending in ``requirements.txt`` is installed with ``-r``
(relative to the service's source folder); one that names an existing folder or file inside the
source folder is installed from that path; anything else is a package spec (``httpx>=0.27``).
Specs already satisfied are skipped by pip itself.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from llamactl.server.config import DeploymentConfig, ServiceConfig
from llamactl.server.errors import DeploymentConfigError, LlamactlError

__all__ = ["install_python_dependencies", "pip_arguments"]

log = logging.getLogger(__name__)


def pip_arguments(
    dependencies: list[str], source_dir: Path, base_path: Path, *, file: str, key: str
) -> list[str]:
    """The ``pip install`` arguments for ``dependencies``.

    Paths are looked up in the service's source folder, then in the deployment folder (Llama
    Deploy 0.9 resolves them there), and must stay inside the deployment folder.
    """
    args: list[str] = []
    base = base_path.resolve()
    for entry in dependencies:
        looks_like_path = entry.endswith("requirements.txt") or "/" in entry or entry.startswith(".")
        if not looks_like_path:
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


async def install_python_dependencies(config: DeploymentConfig, service: ServiceConfig) -> None:
    """``pip install`` the service's python-dependencies into this interpreter (its workers' too)."""
    if not service.python_dependencies:
        return
    args = pip_arguments(
        service.python_dependencies,
        config.source_dir(service.id),
        config.base_path,
        file=str(config.file or "<deployment>"),
        key=f"services.{service.id}.python-dependencies",
    )
    log.info("service %s: installing %s", service.id, " ".join(args))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
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
