"""`llamactl validate`: a deployment file and its services' code, checked without starting anything."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from tests.llamactl.serving import write_app
from tests.templates.conftest import isolated_imports

__all__ = ["isolated_imports"]  # the fixture, used here too (autouse)


def validate(*args: str) -> Result:
    result = CliRunner().invoke(app, ["validate", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_every_kind_of_service_is_reported(tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo")
    result = validate(str(file))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "echo: ok (workflow EchoWorkflow)",
        "stream: ok (workflow StreamingWorkflow)",
        "hitl: ok (workflow HumanWorkflow)",
        "counter: ok (workflow CounterWorkflow)",
        "boom: ok (workflow FailingWorkflow)",
        "func: ok (async function greet)",
        "kinds: ok (async function kinds)",
        "slow: ok (async function slow)",
    ]
    assert "deployment 'demo' is valid (8 services)" in result.stderr


def test_json(tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    report = json.loads(validate(str(file), "-o", "json").stdout)
    assert report == {
        "file": str(file),
        "deployment": "demo",
        "ok": True,
        "services": [
            {"service": "echo", "ok": True, "kind": "workflow", "target": "EchoWorkflow", "error": None}
        ],
    }


def test_the_default_file_is_deployment_yml_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    monkeypatch.chdir(tmp_path)
    assert validate().exit_code == 0
    monkeypatch.chdir(tmp_path / "src")
    result = validate()
    assert result.exit_code == ExitCode.USAGE
    assert "Error: no deployment file at deployment.yml" in result.stderr
    assert "llamactl init" in result.stderr


def test_a_bad_file_names_the_line_and_key(tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    file.write_text(file.read_text().replace("type: local", "type: lokal"))
    result = validate(str(file))
    assert result.exit_code == ExitCode.CONFIG
    assert (
        f"Error: {file}:6: invalid deployment file at 'services.echo.source.type': 'lokal'" in result.stderr
    )
    report = json.loads(validate(str(file), "-o", "json").stdout)
    assert report["ok"] is False and "'lokal' is not a source type" in report["error"]


def test_a_queue_url_the_queue_would_refuse_is_reported(tmp_path: Path) -> None:
    """A url with a query key redis-py does not take passed validate, then failed `serve`."""
    file = write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    queue = "message-queue: {type: redis, url: 'redis://127.0.0.1:6379/0?decode_responses=1'}\n"
    file.write_text(file.read_text().replace("services:\n", queue + "services:\n", 1))
    result = validate(str(file))
    assert result.exit_code == ExitCode.CONFIG
    assert "its query key 'decode_responses' is not one it takes" in result.stderr
    assert f"Hint: fix `message-queue` in {file}" in result.stderr
    report = json.loads(validate(str(file), "-o", "json").stdout)
    assert report["ok"] is False and "decode_responses" in report["error"]


def test_import_errors_are_reported_per_service(tmp_path: Path) -> None:
    file = write_app(
        tmp_path,
        "demo",
        {"echo": "flows:echo_workflow", "gone": "flows:no_such_thing", "broken": "broken:app"},
    )
    (tmp_path / "src" / "broken.py").write_text("import not_installed_anywhere\n")
    result = validate(str(file))
    assert result.exit_code == ExitCode.WORKFLOW_LOAD
    assert result.stdout.splitlines() == ["echo: ok (workflow EchoWorkflow)"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2
    assert errors[0].startswith("Error: gone: service source ")
    assert "has no attribute 'no_such_thing'; it defines: " in errors[0]
    assert "it imports 'not_installed_anywhere', which is not installed" in errors[1]
    assert "Hint: fix the service's code or its `path`, then run `llamactl validate` again" in result.stderr
    report = json.loads(validate(str(file), "-o", "json").stdout)
    assert [s["ok"] for s in report["services"]] == [True, False, False]


def test_a_target_that_is_not_runnable(tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo", {"value": "values:answer"})
    (tmp_path / "src" / "values.py").write_text("answer = 42\n")
    result = validate(str(file))
    assert result.exit_code == ExitCode.WORKFLOW_LOAD
    assert "target 'values:answer' is a int (42); expected a workflows.Workflow instance" in result.stderr


def test_a_service_without_a_path(tmp_path: Path) -> None:
    file = tmp_path / "deployment.yml"
    file.write_text("name: demo\nservices:\n  echo:\n    name: Echo\n")
    result = validate(str(file))
    assert result.exit_code == ExitCode.WORKFLOW_LOAD
    assert "Error: echo: no `path` (or `import-path`): set it to module:attr" in result.stderr


def test_the_service_env_is_set_while_it_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREETING", raising=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "envflow.py").write_text(
        textwrap.dedent(
            """
            import os

            if os.environ.get("GREETING") != "hello":
                raise RuntimeError("GREETING is not set")


            async def greet() -> str:
                return os.environ["GREETING"]
            """
        )
    )
    file = tmp_path / "deployment.yml"
    file.write_text(
        "name: demo\nservices:\n  greet:\n    source: {type: local, location: src}\n"
        "    path: envflow:greet\n    env: {GREETING: hello}\n"
    )
    result = validate(str(file))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "greet: ok (async function greet)\n"
    assert "GREETING" not in os.environ


def test_nothing_is_started(tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    assert validate(str(file)).exit_code == 0
    assert not (tmp_path / ".llamactl").exists()
