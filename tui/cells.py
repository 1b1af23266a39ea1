"""Table cells that render as plain text (never as markup) and carry the value their column sorts by."""

from __future__ import annotations

from typing import Any

from rich.text import Text

__all__ = ["Cell", "sort_value"]


class Cell:
    """One cell: what it shows, its style, and what it sorts by.

    Text from the server (errors, ids) is shown as is: ``[bold]`` in an error message stays text.
    Two cells are equal when they would look the same and sort the same, so a table updates only
    the cells that changed.
    """

    __slots__ = ("rank", "sort_key", "style", "text")

    def __init__(self, text: str, sort_key: Any = None, style: str = "") -> None:
        self.text = text
        self.sort_key = sort_value(text if sort_key is None else sort_key)
        self.style = style
        self.rank = 0
        """Position of its row in the table's order (kept on the first cell of a row)."""

    def __rich__(self) -> Text:
        return Text(self.text, style=self.style, no_wrap=True, overflow="ellipsis", end="")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return (self.text, self.style, self.sort_key) == (other.text, other.style, other.sort_key)

    def __hash__(self) -> int:
        return hash((self.text, self.style))

    def __repr__(self) -> str:
        return f"Cell({self.text!r})"

    def __str__(self) -> str:
        return self.text


def sort_value(value: Any) -> tuple[int, Any]:
    """A key that sorts any values of one column together; None (unknown) last."""
    if value is None:
        return (2, 0)
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())
