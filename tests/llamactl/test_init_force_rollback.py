"""`llamactl init --force` that fails part way puts back the files it had already replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    return tmp_path


def test_a_failed_force_keeps_the_files_it_would_have_replaced(in_tmp: Path) -> None:
    app_dir = in_tmp / "app"
    app_dir.mkdir()
    (app_dir / "README.md").write_text("my own readme\n")
    (app_dir / "deployment.yml").write_text("name: mine\n")
    # The template writes src/workflow.py: a file named src makes it fail after the top-level files.
    (app_dir / "src").write_text("not a folder\n")

    result = CliRunner().invoke(app, ["init", "app", "--force", "--no-git", "--yes"])

    assert result.exit_code == ExitCode.ERROR, result.output
    assert "could not create app" in result.stderr
    assert (app_dir / "README.md").read_text() == "my own readme\n"
    assert (app_dir / "deployment.yml").read_text() == "name: mine\n"
    assert (app_dir / "src").read_text() == "not a folder\n"
    assert sorted(p.name for p in app_dir.iterdir()) == ["README.md", "deployment.yml", "src"]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["app"]


def test_a_failed_force_removes_the_folders_it_made(in_tmp: Path) -> None:
    app_dir = in_tmp / "app"
    app_dir.mkdir()
    (app_dir / "notes.txt").write_text("mine\n")
    # tests/ comes after src/ in the template: src/ is made and filled before tests fails.
    (app_dir / "tests").write_text("not a folder\n")

    result = CliRunner().invoke(app, ["init", "app", "--force", "--no-git", "--yes"])

    assert result.exit_code == ExitCode.ERROR, result.output
    assert sorted(p.name for p in app_dir.iterdir()) == ["notes.txt", "tests"]
