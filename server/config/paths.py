"""Keeping every path of a deployment file (sources, env files, ...) inside the deployment folder."""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["check_relative", "git_checkout_in", "resolve_inside", "resolve_under"]

_COMMIT_DIR = re.compile(r"[0-9a-f]{12,40}")
"""The name of a git source's checkout folder: its commit."""


def check_relative(location: str, what: str, kind: str = "folder") -> None:
    """Raise ``ValueError`` unless ``location`` is a relative path that stays inside its base folder.

    Only the text is looked at (``..``, absolute paths, NUL); :func:`resolve_inside` and
    :func:`resolve_under` also follow symlinks on disk. ``kind`` ("folder", "file") words the message.
    """
    if not location.strip():
        example = "'.' or 'src'" if kind == "folder" else "'.env'"
        raise ValueError(f"{what} needs a {kind}, e.g. {example}")
    if "\x00" in location:
        raise ValueError(f"{what} is not a path: it holds a NUL character")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        raise ValueError(
            f"{what} must be a {kind} relative to the deployment file, got the absolute path '{location}'"
        )
    normalized = posixpath.normpath(location.replace("\\", "/"))
    if normalized == ".." or normalized.startswith("../"):
        raise ValueError(f"{what} must stay inside the deployment folder, but '{location}' leaves it")


def resolve_inside(base: Path, location: str, what: str) -> Path:
    """Resolve ``location`` against ``base`` and check, following symlinks, that it stays inside.

    Raises:
        ValueError: the location is absolute, leaves ``base`` (by ``..`` or a symlink), or is missing.
    """
    check_relative(location, what)
    root = base.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise ValueError(
            f"{what} '{location}' resolves to {target}, outside the deployment folder {root} "
            "(a symlink pointing out is not allowed)"
        )
    if not target.exists():
        raise ValueError(f"{what} folder '{location}' does not exist in {root}")
    if not target.is_dir():
        raise ValueError(f"{what} '{location}' is a file, not a folder")
    return target


def resolve_under(root: Path, base: Path, location: str, what: str) -> Path:
    """``root / location`` resolved (symlinks followed), if it stays inside ``base``.

    ``root`` is ``base`` or a folder inside it (a service's source folder).

    Raises:
        ValueError: the location is absolute or leaves ``base`` (by ``..`` or a symlink).
    """
    check_relative(location, what, "file")
    inside = base.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(inside):
        raise ValueError(
            f"{what} '{location}' resolves to {target}, outside the deployment folder {inside} "
            "(a symlink pointing out is not allowed): keep it inside the deployment folder"
        )
    return target


def git_checkout_in(root: Path, location: str | None) -> str | None:
    """The name of the git checkout in use under ``root`` (a service's ``.llamactl/sources/<id>``),
    if it is there and was fetched from ``location`` (None: from anywhere). ``root/CURRENT``
    names it: ``{"commit": <folder>, "location": <the source's location>}``."""
    try:
        current = json.loads((root / "CURRENT").read_text())
        name, fetched_from = str(current["commit"]), str(current["location"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _COMMIT_DIR.fullmatch(name) or not (root / name).is_dir() or location not in (None, fetched_from):
        return None
    return name
