"""`llamactl init`: templates, names, folders, prompts, git, and nothing left behind on failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llamactl import templates
from llamactl.cli import init as init_module
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from llamactl.server.config import load_deployment_file
from llamactl.templates import list_templates, rename_deployment

TEMPLATES = [t.name for t in list_templates()]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    return tmp_path


def init(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(app, ["init", *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_list_prints_each_template_with_a_description() -> None:
    result = init("--list")
    assert result.exit_code == 0
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["TEMPLATE", "DESCRIPTION"]
    assert [row.split()[0] for row in rows[1:]] == TEMPLATES
    assert TEMPLATES[0] == "basic"
    listed = json.loads(init("--list", "-o", "json").stdout)
    assert {t["name"] for t in listed} == {
        "basic",
        "streaming",
        "human-in-the-loop",
        "multi-service",
        "functions",
    }
    assert all(t["description"] and t["next"] for t in listed)


@pytest.mark.parametrize("template", TEMPLATES)
def test_generates_a_valid_deployment_named_as_asked(template: str, in_tmp: Path) -> None:
    result = init("app", "--template", template, "--name", "my.app_1", "--no-git")
    assert result.exit_code == 0, result.stderr
    config = load_deployment_file(in_tmp / "app" / "deployment.yml")
    assert config.name == "my.app_1"
    files = {p.relative_to(in_tmp / "app").as_posix() for p in (in_tmp / "app").rglob("*") if p.is_file()}
    assert {"deployment.yml", "README.md", ".gitignore", "pyproject.toml"} <= files
    assert any(f.startswith("src/") for f in files) and any(f.startswith("tests/test_") for f in files)
    assert "template.toml" not in files and not any("__pycache__" in f for f in files)
    assert list(in_tmp.iterdir()) == [in_tmp / "app"]  # no staging folder left next to it


def test_defaults_without_a_terminal(in_tmp: Path) -> None:
    result = init("--no-git")
    assert result.exit_code == 0, result.stderr
    assert load_deployment_file(in_tmp / "basic" / "deployment.yml").name == "basic"
    assert result.stdout.splitlines()[-2:] == [
        "  cd basic && llamactl serve deployment.yml",
        '  llamactl run --service echo "hi"',
    ]
    assert "Created basic from the 'basic' template" in result.stderr


def test_the_name_comes_from_the_folder(in_tmp: Path) -> None:
    assert init("My App!", "--no-git").exit_code == 0
    assert load_deployment_file(in_tmp / "My App!" / "deployment.yml").name == "My-App"
    result = init("--name", "shop", "--no-git", "-t", "functions")
    assert result.exit_code == 0
    assert (in_tmp / "shop" / "src" / "functions.py").is_file()
    assert result.stdout.splitlines()[-1] == "  llamactl run --service greet -a name Ada"


def test_into_the_current_folder_prints_no_cd(in_tmp: Path) -> None:
    result = init(".", "--no-git", "--name", "here")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "  llamactl serve deployment.yml"


@pytest.mark.parametrize("name", ["bad name", "-dash", ".dot", "a/b", "é"])
def test_an_invalid_name_is_refused(name: str, in_tmp: Path) -> None:
    result = init("app", "--name", name, "--no-git")
    assert result.exit_code == ExitCode.USAGE
    assert "Error: invalid deployment name:" in result.stderr
    assert "use letters, digits, '-', '_' and '.'" in result.stderr
    assert list(in_tmp.iterdir()) == []


def test_names_yaml_would_misread_stay_strings(in_tmp: Path) -> None:
    for name in ("1.0", "true", "null", "0x10"):
        assert init(name, "--no-git").exit_code == 0
        assert load_deployment_file(in_tmp / name / "deployment.yml").name == name
    assert rename_deployment("# c\nname: x   # the name\nservices: {}\n", "y") == (
        "# c\nname: y   # the name\nservices: {}\n"
    )


def test_an_unknown_template_is_refused(in_tmp: Path) -> None:
    result = init("app", "--template", "nope")
    assert result.exit_code == ExitCode.USAGE
    assert "no template named 'nope': use one of basic, " in result.stderr
    assert "llamactl init --list" in result.stderr
    assert list(in_tmp.iterdir()) == []


def test_a_non_empty_folder_needs_force(in_tmp: Path) -> None:
    (in_tmp / "app").mkdir()
    (in_tmp / "app" / "notes.txt").write_text("mine")
    result = init("app", "--no-git")
    assert result.exit_code == ExitCode.NOT_EMPTY
    assert "app is not empty (it holds notes.txt)" in result.stderr
    assert "--force" in result.stderr
    assert sorted(p.name for p in (in_tmp / "app").iterdir()) == ["notes.txt"]
    result = init("app", "--no-git", "--force")
    assert result.exit_code == 0, result.stderr
    assert (in_tmp / "app" / "notes.txt").read_text() == "mine"
    assert (in_tmp / "app" / "deployment.yml").is_file()
    assert sorted(p.name for p in in_tmp.iterdir()) == ["app"]


def test_an_empty_folder_is_filled(in_tmp: Path) -> None:
    (in_tmp / "app").mkdir()
    assert init("app", "--no-git").exit_code == 0
    assert (in_tmp / "app" / "deployment.yml").is_file()


def test_a_file_in_the_way_is_refused(in_tmp: Path) -> None:
    (in_tmp / "app").write_text("")
    result = init("app", "--no-git", "--force")
    assert result.exit_code == ExitCode.USAGE
    assert "Error: app is a file" in result.stderr


def test_a_failure_leaves_nothing_behind(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = templates.write_template

    def half_then_fail(template: templates.Template, target: Path, name: str) -> list[Path]:
        real(template, target, name)
        raise OSError(28, "No space left on device", str(target / "src"))

    monkeypatch.setattr(templates, "write_template", half_then_fail)
    result = init("deep/er/app", "--no-git")
    assert result.exit_code == ExitCode.ERROR
    assert "could not create deep/er/app: No space left on device" in result.stderr
    assert list(in_tmp.iterdir()) == []
    (in_tmp / "kept").mkdir()
    (in_tmp / "kept" / "mine.txt").write_text("x")
    assert init("kept", "--force", "--no-git").exit_code == ExitCode.ERROR
    assert sorted(p.name for p in in_tmp.iterdir()) == ["kept"]
    assert sorted(p.name for p in (in_tmp / "kept").iterdir()) == ["mine.txt"]


def test_git_init_unless_told_not_or_already_in_a_repository(in_tmp: Path) -> None:
    result = init("app")
    assert result.exit_code == 0, result.stderr
    assert (in_tmp / "app" / ".git").is_dir()
    assert "Initialized a git repository." in result.stderr
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=in_tmp / "app", capture_output=True, text=True, check=True
    )
    assert ".llamactl" not in status.stdout
    result = init("app/nested")
    assert "Already inside a git repository" in result.stderr
    assert not (in_tmp / "app" / "nested" / ".git").exists()
    assert init("plain", "--no-git").exit_code == 0
    assert not (in_tmp / "plain" / ".git").exists()


def test_without_git_on_path(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(in_tmp / "nothing-here"))
    result = init("app")
    assert result.exit_code == 0, result.stderr
    assert "git is not installed" in result.stderr
    assert not (in_tmp / "app" / ".git").exists()


def test_asks_at_a_terminal(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_module, "_interactive", lambda: True)
    streaming = TEMPLATES.index("streaming") + 1
    result = init("--no-git", input=f"nope\n{streaming}\n\nbad name\nprogress\n")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "'nope' is not a template" in result.stderr
    assert "invalid deployment name" in result.stderr
    assert load_deployment_file(in_tmp / "streaming" / "deployment.yml").name == "progress"


def test_yes_asks_nothing_even_at_a_terminal(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_module, "_interactive", lambda: True)
    result = init("--yes", "--no-git", input="")
    assert result.exit_code == 0, result.stderr
    assert (in_tmp / "basic" / "deployment.yml").is_file()


def test_interactive_only_with_two_ttys_and_no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    assert init_module._interactive()
    monkeypatch.setenv("CI", "true")
    assert not init_module._interactive()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("TERM", "dumb")
    assert not init_module._interactive()
