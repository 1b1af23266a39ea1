"""A key written in two spellings (``max-concurrency`` and ``max_concurrency``, ``path`` and
``import-path``) warns which one is used, as a key written twice does."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.config import DeploymentConfigWarning, load_deployment_text

TEXT = """\
name: demo
services:
  echo:
    path: workflow:old
    max-concurrency: 3
    max_concurrency: 4
    import-path: workflow:new
    source:
      type: local
      location: .
      name: src
"""


def test_each_second_spelling_warns_naming_the_one_used(tmp_path: Path) -> None:
    with pytest.warns(DeploymentConfigWarning) as record:
        config = load_deployment_text(TEXT, base_path=tmp_path, file="deployment.yml")
    service = config.service("echo")
    assert (service.max_concurrency, service.import_path) == (3, "workflow:new")
    assert service.source is not None and service.source.location == "."
    found = {
        (w.message.key_path, w.message.line): w.message.problem
        for w in record
        if isinstance(w.message, DeploymentConfigWarning)
    }
    assert set(found) == {
        ("services.echo.max_concurrency", 6),
        ("services.echo.path", 4),
        ("services.echo.source.name", 11),
    }
    assert "'max-concurrency' on line 5" in found[("services.echo.max_concurrency", 6)]
    assert "'import-path' on line 7" in found[("services.echo.path", 4)]
    assert "'location' on line 10" in found[("services.echo.source.name", 11)]


def test_top_level_sections_in_two_spellings_warn(tmp_path: Path) -> None:
    text = "name: demo\ncontrol-plane: {port: 8000}\ncontrol_plane: {port: 9000}\nservices:\n  e:\n    path: w:e\n"
    with pytest.warns(DeploymentConfigWarning, match="'control-plane' on line 2") as record:
        config = load_deployment_text(text, base_path=tmp_path)
    assert config.control_plane.port == 8000
    assert [w.message.line for w in record if isinstance(w.message, DeploymentConfigWarning)] == [3]
