"""Keeping local sources inside the deployment folder."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["check_relative", "resolve_inside"]


def check_relative(location: str, what: str) -> None:
    """Raise ``ValueError`` unless ``location`` is a relative path that stays inside its base folder.

    Only the text is looked at (``..`` and absolute paths); :func:`resolve_inside` also follows
    symlinks on disk.
    """
    if not location.strip():
        raise ValueError(f"{what} needs a folder, e.g. '.' or 'src'")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        raise ValueError(
            f"{what} must be a folder relative to the deployment file, got the absolute path '{location}'"
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
