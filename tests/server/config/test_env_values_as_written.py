"""An unquoted env value reaches the service as it is written, not as YAML 1.1 reads it."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.config import load_deployment_text

TEXT = """\
name: demo
services:
  echo:
    path: workflow:echo
    env:
      PORT: 8080
      DEBUG: true
      COUNTRY: NO
      FEATURE: on
      ZIP: 02134
      VERSION: 1.10
      DURATION: 1:30
      MASK: 0x1F
      BIG: 1_000
      EMPTY:
"""


def test_env_values_are_the_text_written(tmp_path: Path) -> None:
    config = load_deployment_text(TEXT, base_path=tmp_path)
    assert config.service("echo").env == {
        "PORT": "8080",
        "DEBUG": "true",
        "COUNTRY": "NO",
        "FEATURE": "on",
        "ZIP": "02134",
        "VERSION": "1.10",
        "DURATION": "1:30",
        "MASK": "0x1F",
        "BIG": "1_000",
        "EMPTY": "",
    }


def test_an_env_shared_through_an_alias_is_written_text_in_each_service(tmp_path: Path) -> None:
    text = (
        "name: demo\nservices:\n  a:\n    path: workflow:a\n    env: &env\n      VERSION: 2.10\n"
        "  b:\n    path: workflow:b\n    env: *env\n"
    )
    config = load_deployment_text(text, base_path=tmp_path)
    assert config.service("a").env == config.service("b").env == {"VERSION": "2.10"}
