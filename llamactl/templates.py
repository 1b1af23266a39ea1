"""The deployment templates `llamactl init` copies, found in an installed wheel or a source checkout.

A wheel ships them as package data (``llamactl/_templates/<name>/``); a source checkout (or an
editable install) has them in the repository's ``templates/`` folder. Each template is a folder with
a ``deployment.yml`` and a ``template.toml`` (``description``, and ``next``: the commands to suggest
after ``llamactl serve``), which is read here and never copied.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

__all__ = [
    "DEPLOYMENT_FILE",
    "Template",
    "TemplateNotFound",
    "find_template",
    "list_templates",
    "rename_deployment",
    "templates_root",
    "write_template",
]

DEPLOYMENT_FILE = "deployment.yml"
METADATA_FILE = "template.toml"
# Left out of every copy: llamactl's metadata, and what running a template in place leaves behind.
_SKIPPED_NAMES = frozenset({METADATA_FILE, ".llamactl", "__pycache__", ".pytest_cache", ".mypy_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_CHECKOUT = Path(__file__).resolve().parent.parent / "templates"
_NAME_LINE = re.compile(r"^name:[ \t]*[^#\n]*?(?P<comment>[ \t]+#[^\n]*)?$", re.MULTILINE)


class TemplateNotFound(LookupError):
    """No template has this name; ``known`` lists the ones that exist."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"no template named '{name}': use one of {', '.join(known) or '(none found)'}")


@dataclass(frozen=True)
class Template:
    """One template folder and what its ``template.toml`` says about it."""

    name: str
    root: Traversable
    description: str
    next_commands: tuple[str, ...]


def templates_root() -> Traversable:
    """The folder holding the templates: the installed package's data, else the checkout's."""
    packaged = resources.files("llamactl") / "_templates"
    if packaged.is_dir():
        return packaged
    return _CHECKOUT


def _is_template(folder: Traversable) -> bool:
    return folder.is_dir() and (folder / DEPLOYMENT_FILE).is_file()


def _load(folder: Traversable) -> Template:
    meta_file = folder / METADATA_FILE
    meta = tomllib.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    description = str(meta.get("description", "")) or _readme_title(folder)
    commands = meta.get("next", [])
    return Template(
        name=folder.name,
        root=folder,
        description=description,
        next_commands=tuple(str(c) for c in commands) if isinstance(commands, list) else (),
    )


def _readme_title(folder: Traversable) -> str:
    readme = folder / "README.md"
    if not readme.is_file():
        return ""
    first = readme.read_text(encoding="utf-8").strip().splitlines()
    return first[0].lstrip("# ").strip() if first else ""


def list_templates(root: Traversable | None = None) -> list[Template]:
    """Every template, sorted by name (``basic`` first: it is the default)."""
    base = root if root is not None else templates_root()
    if not base.is_dir():
        return []
    found = [_load(folder) for folder in base.iterdir() if _is_template(folder)]
    return sorted(found, key=lambda t: (t.name != "basic", t.name))


def find_template(name: str, root: Traversable | None = None) -> Template:
    """The template called ``name``.

    Raises:
        TemplateNotFound: there is none (the error lists the known names).
    """
    templates = list_templates(root)
    for template in templates:
        if template.name == name:
            return template
    raise TemplateNotFound(name, [t.name for t in templates])


def _files(folder: Traversable, relative: Path) -> Iterator[tuple[Path, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIPPED_NAMES or entry.name.endswith(_SKIPPED_SUFFIXES):
            continue
        if entry.is_dir():
            yield from _files(entry, relative / entry.name)
        else:
            yield relative / entry.name, entry


def rename_deployment(text: str, name: str) -> str:
    """``text`` (a deployment file) with its top-level ``name:`` set to ``name``, comments kept."""
    # A name such as `1.0`, `true` or `null` must stay a string in YAML.
    scalar = name if yaml.safe_load(name) == name else f'"{name}"'
    replaced, count = _NAME_LINE.subn(lambda m: f"name: {scalar}{m.group('comment') or ''}", text, count=1)
    if count == 0:
        return f"name: {scalar}\n{text}"
    return replaced


def write_template(template: Template, target: Path, name: str) -> list[Path]:
    """Copy ``template`` into the existing folder ``target``, naming the deployment ``name``.

    Returns the files written, relative to ``target``. The caller validates ``name`` first.
    """
    written: list[Path] = []
    for relative, source in _files(template.root, Path()):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if relative == Path(DEPLOYMENT_FILE):
            text = rename_deployment(source.read_text(encoding="utf-8"), name)
            destination.write_text(text, encoding="utf-8")
        else:
            destination.write_bytes(source.read_bytes())
        written.append(relative)
    return written
