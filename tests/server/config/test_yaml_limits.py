"""A deployment file cannot hold the server: alias bombs and deep nesting are refused at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_text
from llamactl.server.errors import DeploymentConfigError

GOOD = "name: d\nservices:\n  s:\n    path: m:wf\n"


def _bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n" + GOOD


def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DeploymentConfigError, match="expands to more than 100000 values"):
        load_deployment_text(_bomb(), base_path=tmp_path)
    assert time.monotonic() - started < 2


def test_a_file_nested_deeper_than_the_yaml_parser_can_recurse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="nests more than 100 levels deep"):
        load_deployment_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n" + GOOD, base_path=tmp_path)


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="nests more than 100 levels deep"):
        load_deployment_text("a: &x [*x]\n" + GOOD, base_path=tmp_path)


def test_a_few_shared_anchors_still_load(tmp_path: Path) -> None:
    text = "common: &env {A: '1'}\nname: d\nservices:\n  s:\n    path: m:wf\n    env: *env\n"
    with pytest.warns(Warning):
        config = load_deployment_text(text, base_path=tmp_path)
    assert config.service("s").env == {"A": "1"}
