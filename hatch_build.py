"""Hatch build hook: ship templates/ inside the wheel as llamactl/_templates, minus run-time leftovers.

``force-include`` would copy whatever lies in the folder (a `.llamactl/` left by serving a template
in place, `__pycache__`), so the files are listed here one by one instead. Editable installs need
nothing: `llamactl init` finds the checkout's templates/ itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_SKIPPED_PARTS = {".llamactl", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


class TemplatesHook(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root) / "templates"
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not _SKIPPED_PARTS.intersection(relative.parts) and path.suffix != ".pyc":
                build_data["force_include"][str(path)] = f"llamactl/_templates/{relative.as_posix()}"
