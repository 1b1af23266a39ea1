"""The templates are found from a source checkout and from an installed wheel.

The wheel test builds the wheel (`pip wheel --no-deps`), installs it into a fresh virtual
environment, and runs that environment's `llamactl init`. The new environment sees the project
environment's packages (a .pth line) so nothing is downloaded to install it; building the wheel needs
hatchling, taken from the project environment when it is there and else fetched by pip's build
isolation from the package index.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl import templates
from tests.llamactl.serving import REPO

TEMPLATES = {"basic", "streaming", "human-in-the-loop", "multi-service", "functions"}


def run(*argv: str | Path, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


def test_a_checkout_uses_the_repository_templates() -> None:
    assert Path(str(templates.templates_root())) == REPO / "templates"
    assert {t.name for t in templates.list_templates()} == TEMPLATES


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel installed; yields its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    no_isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        *no_isolation,
        "-q",
        "-w",
        root / "dist",
        REPO,
        cwd=root,
    )
    wheel = next((root / "dist").glob("llamactl-*.whl"))
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root)
    # Appended after the venv's own site-packages: the wheel's llamactl wins over the editable one.
    (Path(purelib.stdout.strip()) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=root,
    )
    yield venv / "bin"


def test_an_installed_wheel_uses_its_packaged_templates(installed: Path, tmp_path: Path) -> None:
    found = run(
        installed / "python",
        "-c",
        "from llamactl import templates; print(templates.templates_root());"
        "print(' '.join(t.name for t in templates.list_templates()))",
        cwd=tmp_path,
    ).stdout.splitlines()
    assert found[0].startswith(str(installed.parent)) and found[0].endswith("llamactl/_templates")
    assert set(found[1].split()) == TEMPLATES


def test_init_from_an_installed_wheel(installed: Path, tmp_path: Path) -> None:
    done = run(installed / "llamactl", "init", "X", "--template", "basic", "--yes", "--no-git", cwd=tmp_path)
    assert done.stdout.splitlines()[-2:] == [
        "  cd X && llamactl serve deployment.yml",
        '  llamactl run --service echo "hi"',
    ]
    project = tmp_path / "X"
    files = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert files == [
        ".gitignore",
        "README.md",
        "deployment.yml",
        "pyproject.toml",
        "src/workflow.py",
        "tests/test_workflow.py",
    ]
    assert "name: X" in (project / "deployment.yml").read_text().splitlines()
    checked = run(installed / "llamactl", "validate", cwd=project)
    assert checked.stdout == "echo: ok (workflow EchoWorkflow)\n"


def test_the_wheel_installs_no_top_level_module_but_llamactl(installed: Path) -> None:
    wheel = next((installed.parent.parent / "dist").glob("llamactl-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"llamactl"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "llamactl/server/services/__main__.py" in names
    assert "llamactl/tui/__init__.py" in names
