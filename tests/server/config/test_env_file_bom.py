"""An env file saved with a UTF-8 byte order mark (Windows editors) reads like one without."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.config import load_deployment_text
from llamactl.server.config.env_files import parse_env_file


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"\xef\xbb\xbfAPI_KEY=secret\r\nMODE=dev\r\n")
    assert parse_env_file(env_file) == {"API_KEY": "secret", "MODE": "dev"}


def test_a_service_reads_an_env_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("\ufeffAPI_KEY=secret\n".encode())
    text = "name: demo\nservices:\n  echo:\n    path: workflow:echo\n    env-files: [.env]\n"
    config = load_deployment_text(text, base_path=tmp_path)
    assert config.service_env("echo") == {"API_KEY": "secret"}
