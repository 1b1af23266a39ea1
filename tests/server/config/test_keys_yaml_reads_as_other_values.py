"""A service id or env name that YAML reads as a boolean, null or a number is refused at its line.

YAML 1.1 reads ``yes:``, ``on:``, ``~:`` and ``010:`` as true, null and 8; taken as they are, the
service would be called ``True`` (and every error about it would point at ``services:``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_text
from llamactl.server.errors import DeploymentConfigError

SERVICES = """\
name: demo
services:
  echo:
    path: workflow:echo
  {key}:
    path: workflow:other
"""


@pytest.mark.parametrize(
    ("key", "reads_as"), [("yes", "true"), ("off", "false"), ("~", "nothing"), ("010", "8")]
)
def test_a_service_id_yaml_reads_as_another_value_is_refused_at_its_line(
    key: str, reads_as: str, tmp_path: Path
) -> None:
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment_text(SERVICES.format(key=key), base_path=tmp_path, file="deployment.yml")
    assert caught.value.line == 5
    assert caught.value.key_path == f"services.{key}"
    assert f"reads as {reads_as}" in caught.value.problem
    assert "quotes" in caught.value.problem


@pytest.mark.parametrize("key", ["'yes'", '"010"', "1", "echo2"])
def test_service_ids_that_stay_as_written_load(key: str, tmp_path: Path) -> None:
    config = load_deployment_text(SERVICES.format(key=key), base_path=tmp_path)
    assert list(config.services) == ["echo", key.strip("'\"")]


def test_an_env_name_yaml_reads_as_a_boolean_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "name: demo\nservices:\n  echo:\n    path: workflow:echo\n    env:\n      A: '1'\n      ON: '2'\n"
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment_text(text, base_path=tmp_path)
    assert (caught.value.line, caught.value.key_path) == (7, "services.echo.env.ON")
    assert "reads as true" in caught.value.problem
