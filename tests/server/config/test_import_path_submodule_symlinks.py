"""An import path's dotted module (``pkg.flows``) stays inside the deployment folder at every
part, not only its top package: a submodule or subpackage symlinked out is refused too."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.config import DeploymentConfig, load_deployment_text
from llamactl.server.errors import DeploymentConfigError


def _load(base: Path, import_path: str) -> DeploymentConfig:
    text = f"name: d\nservices:\n  a:\n    source: {{type: local, location: src}}\n    path: {import_path}\n"
    return load_deployment_text(text, base_path=base, file="d.yml")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    (folder / "flows.py").write_text("wf = 1\n")
    (folder / "sub" / "flows.py").write_text("wf = 1\n")
    return folder


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    (folder / "src" / "pkg").mkdir(parents=True)
    (folder / "src" / "pkg" / "__init__.py").write_text("")
    return folder


def test_a_submodule_symlinked_out_is_refused(base: Path, outside: Path) -> None:
    (base / "src" / "pkg" / "flows.py").symlink_to(outside / "flows.py")
    config = _load(base, "pkg.flows:wf")
    with pytest.raises(DeploymentConfigError, match="a symlink pointing out is not allowed") as info:
        config.import_root("a")
    assert (info.value.key_path, info.value.line) == ("services.a.path", 5)


def test_a_subpackage_symlinked_out_is_refused(base: Path, outside: Path) -> None:
    (base / "src" / "pkg" / "sub").symlink_to(outside / "sub")
    config = _load(base, "pkg.sub.flows:wf")
    with pytest.raises(DeploymentConfigError, match="outside the deployment folder"):
        config.import_root("a")


def test_a_submodule_inside_the_folder_resolves(base: Path) -> None:
    (base / "src" / "pkg" / "flows.py").write_text("wf = 1\n")
    (base / "src" / "pkg" / "alias.py").symlink_to(base / "src" / "pkg" / "flows.py")
    assert _load(base, "pkg.alias:wf").import_root("a") == base / "src"
