"""load_target: every accepted import path form, and every failure with a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.errors import WorkflowLoadError
from llamactl.server.services.errorinfo import traceback_summary
from llamactl.server.services.loader import load_target

from .conftest import WriteModule


def test_module_attr(source_dir: Path, write_module: WriteModule) -> None:
    write_module("flows.py", "VALUE = 41\n")
    assert load_target(source_dir, "flows:VALUE") == 41


def test_package_module_and_dotted_attr(source_dir: Path, write_module: WriteModule) -> None:
    write_module("pkg/__init__.py", "")
    write_module("pkg/mod.py", "class App:\n    answer = 42\n")
    assert load_target(source_dir, "pkg.mod:App.answer") == 42


def test_sub_dir_module_is_importable_with_its_siblings(source_dir: Path, write_module: WriteModule) -> None:
    write_module("src/app/helper.py", "X = 'sibling'\n")
    write_module("src/app/main.py", "from helper import X\nVALUE = X\n")
    assert load_target(source_dir, "src/app/main:VALUE") == "sibling"
    assert load_target(source_dir, "src/app/main.py:VALUE") == "sibling"


def test_same_module_name_in_two_sources_does_not_shadow(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shared_name_flows.py").write_text(f"WHO = {name!r}\n")
    assert load_target(tmp_path / "one", "shared_name_flows:WHO") == "one"
    assert load_target(tmp_path / "two", "shared_name_flows:WHO") == "two"


@pytest.mark.parametrize("path", ["../outside:x", "/etc/passwd:x", "a/../../b:x"])
def test_paths_escaping_the_source_are_refused(source_dir: Path, path: str) -> None:
    with pytest.raises(WorkflowLoadError, match="inside the service source") as err:
        load_target(source_dir, path)
    assert str(source_dir) in str(err.value)
    assert repr(path) in str(err.value)


@pytest.mark.parametrize("path", ["flows", "flows:", ":wf", "fl-ows:wf", "flows:not-an-attr"])
def test_malformed_import_paths(source_dir: Path, path: str) -> None:
    with pytest.raises(WorkflowLoadError, match=r"import path"):
        load_target(source_dir, path)


def test_module_not_found_names_source_and_path(source_dir: Path) -> None:
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "nothere:wf")
    msg = str(err.value)
    assert str(source_dir) in msg
    assert "'nothere:wf'" in msg
    assert "module 'nothere' not found" in msg


def test_missing_dependency_is_named(source_dir: Path, write_module: WriteModule) -> None:
    write_module("needs.py", "import surely_not_installed_pkg\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "needs:wf")
    assert "imports 'surely_not_installed_pkg', which is not installed" in str(err.value)
    assert "needs.py:1" in str(err.value)


def test_missing_attribute_lists_what_the_module_has(source_dir: Path, write_module: WriteModule) -> None:
    write_module("flows.py", "my_workflow = 1\nother = 2\n_private = 3\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "flows:my_wokflow")
    msg = str(err.value)
    assert "has no attribute 'my_wokflow'" in msg
    assert "it defines: my_workflow, other" in msg
    assert "_private" not in msg


def test_syntax_error_gives_file_and_line(source_dir: Path, write_module: WriteModule) -> None:
    file = write_module("broken.py", "x = 1\ndef f(:\n    pass\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "broken:f")
    msg = str(err.value)
    assert f"syntax error in {file} line 2" in msg
    assert str(source_dir) in msg


def test_the_traceback_of_a_syntax_error_shows_the_line_and_where_in_it(
    source_dir: Path, write_module: WriteModule
) -> None:
    """A reload that failed on a syntax error showed importlib's own frames (`return
    _bootstrap._gcd_import(...)`) and the error, not the line with the mistake."""
    file = write_module("broken.py", "x = 1\ndef f(:\n    pass\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "broken:f")
    assert err.value.__cause__ is not None
    shown = traceback_summary(err.value.__cause__)
    assert shown == f'  File "{file}", line 2\n    def f(:\n          ^\nSyntaxError: invalid syntax\n'


def test_the_traceback_of_an_import_that_raised_shows_the_user_s_frames_only(
    source_dir: Path, write_module: WriteModule
) -> None:
    file = write_module("boom.py", "def explode():\n    raise RuntimeError('no API key')\n\nexplode()\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "boom:wf")
    assert err.value.__cause__ is not None
    shown = traceback_summary(err.value.__cause__)
    assert "importlib" not in shown
    assert shown.startswith(f'  File "{file}", line 4, in <module>\n    explode()\n'), shown
    assert shown.endswith("RuntimeError: no API key")


def test_exception_during_import_gives_error_and_location(
    source_dir: Path, write_module: WriteModule
) -> None:
    file = write_module("boom.py", "def explode():\n    raise RuntimeError('no API key')\n\nexplode()\n")
    with pytest.raises(WorkflowLoadError) as err:
        load_target(source_dir, "boom:wf")
    msg = str(err.value)
    assert "raised RuntimeError: no API key" in msg
    assert f"{file}:2 <- {file}:4" in msg


def test_missing_source_folder(tmp_path: Path) -> None:
    with pytest.raises(WorkflowLoadError, match="does not exist"):
        load_target(tmp_path / "nope", "flows:wf")
