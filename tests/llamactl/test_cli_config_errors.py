"""Issue #13, point 7: errors about a deployment file.

`deploy` names the file it uploaded and exits with the code `serve` and `validate` use for the
same mistake; a misspelled required key is named as such; a misspelled optional key is an error
under `validate --strict`; warnings read the same from all three commands; no hint repeats the
error it follows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from tests.llamactl.serving import Server, llamactl, write_app

runner = CliRunner()

SOURCE_TYPE_TYPO = (
    "name: bad\nservices:\n  echo:\n    source: {type: lokal, location: src}\n    path: flows:x\n"
)
SERVICES_TYPO = "name: bad\nsevices:\n  echo:\n    source: {type: local, location: src}\n    path: flows:x\n"
MISSING_MODULE = (
    "name: bad\nservices:\n  echo:\n    source: {type: local, location: src}\n    path: nope:flow\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(extra=["--deployments-root", str(tmp_path_factory.getbasetemp())])
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def serve(file: Path) -> tuple[int, str]:
    with llamactl("serve", str(file), "--port", "0") as process:
        _, err = process.communicate(timeout=120)
    return process.returncode, err


def app_with(folder: Path, text: str) -> Path:
    file = write_app(folder, "bad", {"echo": "flows:echo_workflow"})
    file.write_text(text)
    return file


def error_line(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("Error: "))


def test_deploy_names_the_file_it_uploaded_and_exits_like_serve_and_validate(
    server: Server, tmp_path: Path
) -> None:
    file = app_with(tmp_path, SOURCE_TYPE_TYPO)
    deployed = cli("--server", server.url, "deploy", str(file))
    validated = cli("validate", str(file))
    served = serve(file)
    assert deployed[0] == validated[0] == served[0] == ExitCode.CONFIG
    assert f"Error: {file}:4: invalid deployment file at 'services.echo.source.type'" in deployed[2]
    assert "<uploaded deployment file>" not in deployed[2]
    assert error_line(deployed[2]) == error_line(validated[2]) == error_line(served[1])


def test_a_service_that_does_not_load_has_the_same_exit_code_everywhere(
    server: Server, tmp_path: Path
) -> None:
    file = app_with(tmp_path, MISSING_MODULE)
    deployed = cli("--server", server.url, "deploy", str(file))
    validated = cli("validate", str(file))
    served = serve(file)
    assert deployed[0] == validated[0] == served[0] == ExitCode.WORKFLOW_LOAD, deployed[2]
    for err in (deployed[2], validated[2], served[1]):
        assert "nope" in error_line(err)


def test_a_misspelled_required_key_is_named(server: Server, tmp_path: Path) -> None:
    file = app_with(tmp_path, SERVICES_TYPO)
    for code, err in (
        cli("validate", str(file))[::2],
        cli("--server", server.url, "deploy", str(file))[::2],
        serve(file),
    ):
        assert code == ExitCode.CONFIG
        assert (
            f"Error: {file}:2: invalid deployment file at 'services': missing required key 'services': "
            in err
        )
        assert "'sevices' on line 2 looks like a misspelling of it" in err


def test_a_misspelled_optional_key_is_a_warning_and_an_error_under_strict(tmp_path: Path) -> None:
    file = write_app(tmp_path, "typo", {"echo": "flows:echo_workflow"})
    file.write_text(file.read_text().replace("default-service:", "default-servce:"))
    code, out, err = cli("validate", str(file))
    assert code == 0 and out == "echo: ok (workflow EchoWorkflow)\n"
    assert (
        f"Warning: {file}:2: 'default-servce': unknown key, ignored: did you mean 'default-service'?" in err
    )
    code, out, err = cli("validate", "--strict", str(file))
    assert (code, out) == (ExitCode.CONFIG, "")
    assert f"Error: {file}:2: 'default-servce': unknown key: did you mean 'default-service'?" in err
    assert "Hint: fix the file (or leave out --strict), then validate again" in err


def test_warnings_read_the_same_from_serve_validate_and_deploy(server: Server, tmp_path: Path) -> None:
    file = write_app(tmp_path, "warned", {"echo": "flows:echo_workflow"})
    file.write_text(file.read_text().replace("default-service:", "default-servce:"))
    expected = f"Warning: {file}:2: 'default-servce': unknown key, ignored: did you mean 'default-service'?"
    assert expected in cli("validate", str(file))[2].splitlines()
    assert expected in cli("--server", server.url, "deploy", str(file))[2].splitlines()
    cli("--server", server.url, "deployments", "delete", "warned")
    served = Server(file)
    try:
        assert expected in served.stderr.lines
        assert not any("UserWarning" in line or "warnings.warn" in line for line in served.stderr.lines)
    finally:
        assert served.stop() == 0


# --- hints never repeat the message ----------------------------------------------------------


def _commands(line: str) -> list[str]:
    return re.findall(r"`([^`]+)`", line)


ERRORS = [
    ["validate", "/no/such/deployment.yml"],
    ["tasks", "list", "--status", "done"],
    ["--server", "127.0.0.1:9", "status"],
    ["init", "--template", "nope", "--yes", "--no-git"],
]


@pytest.mark.parametrize("args", ERRORS, ids=" ".join)
def test_a_hint_never_repeats_the_error(args: list[str]) -> None:
    _, _, err = cli(*args)
    errors = [line.removeprefix("Error: ") for line in err.splitlines() if line.startswith("Error: ")]
    hints = [line.removeprefix("Hint: ") for line in err.splitlines() if line.startswith("Hint: ")]
    for message in errors:
        for hint in hints:
            assert hint.lower() not in message.lower()
            for command in _commands(hint):
                assert command.split(" -d ")[0] not in message, (message, hint)


def test_the_server_errors_that_say_what_to_run_get_no_second_hint(server: Server) -> None:
    code, _, err = cli("--server", server.url, "tasks", "show", "nope", "-d", "nope")
    assert code == ExitCode.NOT_FOUND
    assert "llamactl deployments list" in err
    assert err.count("llamactl deployments list") == 1, err
