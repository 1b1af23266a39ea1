"""Each template's shape, and its own tests (`templates/<name>/tests/`) run the way a user runs them:
`pytest` inside a generated copy, in a subprocess, so the repository's conftest and config stay out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamactl.cli.main import app
from llamactl.templates import find_template, write_template
from tests.llamactl.serving import REPO

TEMPLATES = ["basic", "streaming", "human-in-the-loop", "multi-service", "functions"]
KEY = re.compile(r"^\s*([A-Za-z0-9_-]+):")


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_has_what_a_project_needs(name: str) -> None:
    folder = REPO / "templates" / name
    assert (folder / "README.md").read_text().startswith("# ")
    assert ".llamactl/" in (folder / ".gitignore").read_text().splitlines()
    assert list((folder / "src").glob("*.py"))
    assert list((folder / "tests").glob("test_*.py"))
    assert find_template(name).description


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_deployment_key_is_explained_by_a_comment(name: str) -> None:
    lines = (REPO / "templates" / name / "deployment.yml").read_text().splitlines()
    keys, explained = set(), set()
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        keys.add(match.group(1))
        if "#" in line or (number > 0 and lines[number - 1].lstrip().startswith("#")):
            explained.add(match.group(1))
    assert keys - explained == set()


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_validates_in_place(name: str) -> None:
    """The checkout's templates are deployments as they are (the README serves templates/basic)."""
    result = CliRunner().invoke(app, ["validate", str(REPO / "templates" / name / "deployment.yml")])
    assert result.exit_code == 0, result.stderr
    assert all(": ok (" in line for line in result.stdout.splitlines())


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_own_tests_pass_in_a_generated_copy(name: str, tmp_path: Path) -> None:
    project = tmp_path / name
    project.mkdir()
    write_template(find_template(name), project, name)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b\d+ passed\b", done.stdout) and "failed" not in done.stdout
