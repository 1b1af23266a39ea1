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
                if child in self.lines:
                    self.duplicates.append((child, self.lines[child], line))
                # The last one wins, as in the constructed data, so errors point at the value used.
                self.lines[child] = line
                self._add(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.lines.setdefault(child, item.start_mark.line + 1)
                self._add(item, child)


def _normalize(path: KeyPath) -> KeyPath:
    return tuple(p if isinstance(p, int) else str(p) for p in path)


def parse_yaml(text: str, file: str) -> tuple[Any, LineIndex]:
    """Parse ``text`` with the safe loader; return the data and its line index.

    Raises:
        DeploymentConfigError: the text is not valid YAML (line and column from the YAML mark),
            holds more than one document, or is empty.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DeploymentConfigError(
                file, "", None, "the file is empty: a deployment needs at least 'name:' and 'services:'"
            )
        data = loader.construct_document(node)
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
