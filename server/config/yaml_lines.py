"""Parse YAML once and remember where every key was written.

``yaml.safe_load`` throws the marks away, so we compose the node tree with the safe loader,
index the 1-based line of every key by its key path, then construct the plain Python data
from the same tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from llamactl.server.errors import DeploymentConfigError

__all__ = ["KeyPath", "LineIndex", "format_key_path", "parse_yaml"]

KeyPath = tuple[str | int, ...]

MAX_VALUES = 100_000
"""The most values a deployment file may hold once its aliases are expanded (a real one has hundreds)."""
MAX_DEPTH = 100
"""How deeply a deployment file may nest."""


_NUMBER_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float"))
_NOT_TEXT_TAGS = _NUMBER_TAGS | {"tag:yaml.org,2002:null"}


def format_key_path(path: KeyPath) -> str:
    """``('services', 'echo', 'env-files', 0)`` -> ``services.echo.env-files[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class LineIndex:
    """The 1-based line of each key (or list item) of a YAML document, by key path."""

    lines: dict[KeyPath, int] = field(default_factory=dict)
    root_line: int = 1
    duplicates: list[tuple[KeyPath, int, int]] = field(default_factory=list)
    """Keys written twice in one mapping: (path, first line, last line). YAML keeps the last."""
    not_text: list[tuple[KeyPath, int]] = field(default_factory=list)
    """Keys YAML reads as a boolean, null or number (``yes:``, ``~:``, ``010:``): (path as written, line)."""
    written: dict[KeyPath, str] = field(default_factory=dict)
    """The text of each value YAML reads as a boolean or number, by key path (``NO``, ``1.10``, ``0x1F``)."""

    def exact(self, path: KeyPath) -> int | None:
        """The line of exactly this key, or None when it is not in the file."""
        return self.lines.get(_normalize(path))

    def line(self, path: KeyPath) -> int:
        """The line of this key, or of its closest ancestor written in the file.

        A missing key is reported at the line of the mapping that should hold it.
        """
        norm = _normalize(path)
        for end in range(len(norm), 0, -1):
            found = self.lines.get(norm[:end])
            if found is not None:
                return found
        return self.root_line

    def _add(self, node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                child = (*path, key)
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _NOT_TEXT_TAGS:
                    self.not_text.append((child, line))
                if child in self.lines:
                    self.duplicates.append((child, self.lines[child], line))
                # The last one wins, as in the constructed data, so errors point at the value used.
                self.lines[child] = line
                if isinstance(value_node, yaml.ScalarNode) and value_node.tag in _NUMBER_TAGS:
                    self.written[child] = value_node.value
                self._add(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.lines.setdefault(child, item.start_mark.line + 1)
                self._add(item, child)


def _normalize(path: KeyPath) -> KeyPath:
    return tuple(p if isinstance(p, int) else str(p) for p in path)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse a tree that nests too deeply or expands too far: a "billion laughs" file of a few
    aliases expands to 10**9 values and would hold the server's event loop for hours."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        line = node.start_mark.line + 1
        if children_done:
            total = 1 + sum(sizes.get(id(child), 1) for child in children)
            if total > MAX_VALUES:
                raise DeploymentConfigError(
                    file,
                    "",
                    line,
                    f"the file expands to more than {MAX_VALUES} values (through YAML "
                    "aliases?): write the repeated parts out",
                )
            sizes[id(node)] = total
            continue
        if depth > MAX_DEPTH:
            raise DeploymentConfigError(file, "", line, f"the file nests more than {MAX_DEPTH} levels deep")
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def parse_yaml(text: str, file: str) -> tuple[Any, LineIndex]:
    """Parse ``text`` with the safe loader; return the data and its line index.

    Raises:
        DeploymentConfigError: the text is not valid YAML (line and column from the YAML mark),
            holds more than one document, is empty, nests more than :data:`MAX_DEPTH` levels or
            expands (through aliases) to more than :data:`MAX_VALUES` values.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DeploymentConfigError(
                file, "", None, "the file is empty: a deployment needs at least 'name:' and 'services:'"
            )
        _check_size(node, file)
        data = loader.construct_document(node)
    except RecursionError:
        raise DeploymentConfigError(
            file, "", None, f"the file nests more than {MAX_DEPTH} levels deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = f" (column {mark.column + 1})" if mark is not None else ""
        what = exc.problem or exc.context or "syntax error"
        raise DeploymentConfigError(file, "", line, f"not valid YAML: {what}{column}") from None
    except yaml.YAMLError as exc:
        raise DeploymentConfigError(file, "", None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    index = LineIndex(root_line=node.start_mark.line + 1)
    index._add(node, ())
    return data, index
