"""Every mistake in a deployment file names the key path, the exact line and what would be valid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_file, load_deployment_text
from llamactl.server.errors import DeploymentConfigError

GOOD = """\
name: demo
services:
  echo:
    name: Echo
    source:
      type: local
      location: src
    import-path: workflow:echo
"""


def _with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


CASES = [
    # (id, yaml, key path, line, message fragment)
    (
        "bad-source-type",
        _with("type: local", "type: lokal"),
        "services.echo.source.type",
        6,
        "'lokal' is not a source type: use one of local, git, docker",
    ),
    ("missing-name", _with("name: demo\n", ""), "name", 1, "missing required key 'name'"),
    (
        "replicas-negative",
        GOOD + "    replicas: -1\n",
        "services.echo.replicas",
        9,
        "expected a whole number >= 0, got -1",
    ),
    (
        "replicas-zero-on-the-embedded-queue",
        GOOD + "    replicas: 0\n",
        "services.echo.replicas",
        9,
        "0 leaves the service to `llamactl worker` on other hosts, which cannot reach the embedded zeromq",
    ),
    (
        "import-path-shape",
        _with("import-path: workflow:echo", "import-path: workflow"),
        "services.echo.import-path",
        8,
        "import path 'workflow' must look like module:attr",
    ),
    (
        "import-path-escape",
        _with("import-path: workflow:echo", "path: ../up/workflow:echo"),
        "services.echo.path",
        8,
        "must not leave the deployment folder",
    ),
    (
        "name-not-identifier",
        _with("name: demo", "name: my demo"),
        "name",
        1,
        "'my demo' cannot be used in URLs and topic names: use letters, digits, '-', '_' and '.'",
    ),
    (
        "service-id-not-identifier",
        _with("  echo:", "  echo/v2:"),
        "services.echo/v2",
        3,
        "'echo/v2' cannot be used in URLs",
    ),
    ("services-empty", "name: demo\nservices: {}\n", "services", 2, "no services are defined"),
    ("services-missing", "name: demo\n", "services", 1, "missing required key 'services'"),
    (
        "default-service-unknown",
        "default-service: ehco\n" + GOOD,
        "default-service",
        1,
        "'ehco' is not one of the services: use one of echo",
    ),
    (
        "local-source-absolute",
        _with("location: src", "location: /etc"),
        "services.echo.source.location",
        7,
        "absolute path '/etc'",
    ),
    (
        "local-source-dotdot",
        _with("location: src", "location: src/../../elsewhere"),
        "services.echo.source.location",
        7,
        "must stay inside the deployment folder",
    ),
    (
        "source-missing-location",
        _with("      location: src\n", ""),
        "services.echo.source.location",
        5,
        "missing required key 'location'",
    ),
    (
        "timeout-not-positive",
        GOOD + "    timeout: 0\n",
        "services.echo.timeout",
        9,
        "expected a number of seconds > 0, got 0",
    ),
    (
        "max-concurrency-text",
        GOOD + "    max_concurrency: lots\n",
        "services.echo.max_concurrency",
        9,
        "expected a whole number >= 1, got 'lots'",
    ),
    (
        "max-result-size-too-large",
        GOOD + "    max-result-size: 2G\n",
        "services.echo.max-result-size",
        9,
        "expected a size from 1 KB to 512 MB (bytes, or e.g. 512K, 64M), got '2G'",
    ),
    (
        "max-memory-too-small",
        GOOD + "    max-memory: 10M\n",
        "services.echo.max-memory",
        9,
        "expected a size from 64 MB to 1024 GB (bytes, or e.g. 512K, 64M), got '10M'",
    ),
    (
        "max-result-size-text",
        GOOD + "    max-result-size: lots\n",
        "services.echo.max-result-size",
        9,
        "got 'lots'",
    ),
    (
        "port-out-of-range",
        GOOD + "    port: 70000\n",
        "services.echo.port",
        9,
        "expected a port number between 1 and 65535, got 70000",
    ),
    (
        "control-plane-port-negative",
        "control-plane:\n  port: -1\n" + GOOD,
        "control-plane.port",
        2,
        "got -1",
    ),
    (
        "env-value-mapping",
        GOOD + "    env:\n      PORT: 8080\n      NESTED:\n        a: b\n",
        "services.echo.env.NESTED",
        11,
        "an env value must be text, a number or true/false, got a mapping",
    ),
    (
        "env-files-not-a-list",
        GOOD + "    env-files: .env\n",
        "services.echo.env-files",
        9,
        "expected a list, got '.env'",
    ),
    (
        "queue-type-unknown",
        "message-queue:\n  type: zmq\n" + GOOD,
        "message-queue.type",
        2,
        "'zmq' is not a message queue type: use one of zeromq, redis, rabbitmq",
    ),
    (
        "queue-lease-negative",
        "message_queue:\n  lease: -5\n" + GOOD,
        "message_queue.lease",
        2,
        "expected a number of seconds > 0, got -5",
    ),
    (
        "control-plane-not-mapping",
        "control-plane: 8000\n" + GOOD,
        "control-plane",
        1,
        "expected a mapping of key: value lines, got 8000",
    ),
    (
        "use-tls-not-bool",
        "control-plane:\n  use_tls: maybe\n" + GOOD,
        "control-plane.use_tls",
        2,
        "expected true or false, got 'maybe'",
    ),
    (
        "name-a-number",
        _with("name: demo", "name: 2024"),
        "name",
        1,
        "expected text, got 2024 (put it in quotes)",
    ),
    (
        "source-not-mapping",
        _with("    source:\n      type: local\n      location: src\n", "    source: src\n"),
        "services.echo.source",
        5,
        "expected a mapping of key: value lines, got 'src'",
    ),
    ("yaml-syntax", GOOD + "  bad: [unclosed\n", "", 10, "not valid YAML"),
    (
        "yaml-indentation",
        "name: demo\n  services: x\n",
        "",
        2,
        "not valid YAML: mapping values are not allowed",
    ),
    ("yaml-two-documents", GOOD + "---\nname: other\n", "", 9, "not valid YAML"),
    ("top-level-list", "- name: demo\n", "", 1, "the top level must be a mapping"),
    ("top-level-scalar", "\n\njust text\n", "", 3, "the top level must be a mapping"),
]


@pytest.mark.parametrize(
    ("text", "key_path", "line", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mistake_names_key_path_line_and_fix(text: str, key_path: str, line: int, fragment: str) -> None:
    with pytest.raises(DeploymentConfigError) as info:
        load_deployment_text(text, base_path=Path("/srv/demo"), file="demo.yml")
    err = info.value
    assert err.file == "demo.yml"
    assert err.key_path == key_path
    assert err.line == line
    assert fragment in err.problem
    assert str(err).startswith(f"demo.yml:{line}: ")


def test_several_mistakes_report_the_first_in_file_order() -> None:
    text = GOOD + "    replicas: -1\n    timeout: -1\n"
    with pytest.raises(DeploymentConfigError) as info:
        load_deployment_text(text, base_path=Path("/srv/demo"))
    assert info.value.key_path == "services.echo.replicas"
    assert "and 1 more problem" in info.value.problem


def test_no_raw_pydantic_or_yaml_error_leaks() -> None:
    for _, text, *_ in CASES:
        with pytest.raises(DeploymentConfigError) as info:
            load_deployment_text(text, base_path=Path("/srv/demo"))
        assert "pydantic" not in str(info.value)
        assert "Traceback" not in str(info.value)
        assert info.value.__cause__ is None


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yml"
    path.write_text("# nothing yet\n")
    with pytest.raises(DeploymentConfigError, match="the file is empty") as info:
        load_deployment_file(path)
    assert info.value.file == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="no such file") as info:
        load_deployment_file(tmp_path / "nope.yml")
    assert info.value.line is None


def test_directory_instead_of_file_suggests_the_yaml_inside(tmp_path: Path) -> None:
    (tmp_path / "deployment.yml").write_text(GOOD)
    with pytest.raises(DeploymentConfigError, match="folder, not a file") as info:
        load_deployment_file(tmp_path)
    assert "deployment.yml" in info.value.problem


def test_binary_file_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DeploymentConfigError, match="not a text file"):
        load_deployment_file(path)


def test_unsafe_yaml_tags_are_refused() -> None:
    text = textwrap.dedent("""\
        name: !!python/object/apply:os.system ["echo pwned"]
        services: {echo: {}}
        """)
    with pytest.raises(DeploymentConfigError, match="not valid YAML") as info:
        load_deployment_text(text, base_path=Path("/srv/demo"))
    assert info.value.line == 1
