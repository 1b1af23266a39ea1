"""A keyed table drawn line by line: cheap enough to redraw several times a second under a busy feed.

Textual's DataTable renders every visible cell through Rich again whenever any cell changes, and
removes rows in O(n) each; at hundreds of task changes per second that alone saturates a core. This
grid keeps its rows as plain (text, style) cells, builds each visible row's segments directly, and
caches them per row until that row's cells change. Rows are keyed by id: the cursor stays on its
row, wherever that row moves, and that row keeps its place on screen when it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from llamactl.tui.cells import Cell

__all__ = ["Column", "LiveGrid", "Row"]

Row = tuple[str, list[Cell]]
"""A row: its key and its cells, one per column in order."""


class Column(NamedTuple):
    key: str
    label: str
    width: int


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style()


def _fit(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, max(width - 1, 0)) + "…"


class LiveGrid(ScrollView, can_focus=True):
    """Rows of cells under a fixed header line; arrows move the cursor, enter selects.

    Subclasses name their columns and call :meth:`show` with the rows to display, in order.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-grid--header",
        "live-grid--cursor",
        "live-grid--cursor-blurred",
    }

    DEFAULT_CSS = """
    LiveGrid { height: 1fr; scrollbar-size: 1 1; background: $surface; }
    LiveGrid > .live-grid--header { text-style: bold; background: $panel; color: $foreground; }
    LiveGrid > .live-grid--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    LiveGrid > .live-grid--cursor-blurred { background: $block-cursor-blurred-background; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=True, init=False)

    class RowHighlighted(Message):
        """The user moved the cursor to the row of ``key``."""

        def __init__(self, grid: LiveGrid, key: str) -> None:
            super().__init__()
            self.grid = grid
            self.key = key

        @property
        def control(self) -> LiveGrid:
            return self.grid

    class RowSelected(RowHighlighted):
        """The user pressed enter on (or clicked again) the row of ``key``."""

    class HeaderClicked(Message):
        def __init__(self, grid: LiveGrid, column: str) -> None:
            super().__init__()
            self.grid = grid
            self.column = column

        @property
        def control(self) -> LiveGrid:
            return self.grid

    def __init__(
        self, columns: Sequence[Column], *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, list[Cell]] = {}
        self._strips: dict[tuple[str, str], tuple[tuple[tuple[str, str], ...], Strip]] = {}
        self._quiet = False
        self._labels: list[tuple[str, str]] = [(c.label, "") for c in self.columns]

    # --- content ---------------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """The keys of the rows, top to bottom."""
        return list(self._keys)

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None when the grid is empty)."""
        if not self._keys:
            return None
        return self._keys[min(self.cursor_row, len(self._keys) - 1)]

    def get_cell(self, key: str, column: str) -> Cell:
        """The cell of row ``key`` in ``column`` (KeyError if either is unknown)."""
        index = [c.key for c in self.columns].index(column)
        return self._cells[key][index]

    def set_label(self, column: str, label: str, style: str = "") -> None:
        index = [c.key for c in self.columns].index(column)
        self._labels[index] = (label, style)
        self.refresh(Region(0, 0, self.size.width, 1))

    def show(self, rows: Sequence[Row]) -> None:
        """Show exactly ``rows``, in this order; the cursor stays on its row."""
        cursor_key = self.cursor_key
        screen_offset = self.cursor_row - round(self.scroll_y)
        self._keys = [key for key, _ in rows]
        self._index = {key: n for n, key in enumerate(self._keys)}
        self._cells = dict(rows)
        if len(self._strips) > 4 * max(len(self._keys), 50):
            self._strips = {k: v for k, v in self._strips.items() if k[0] in self._index}
        width = sum(c.width + 2 for c in self.columns)
        self.virtual_size = Size(width, len(self._keys) + 1)
        self._quiet = True
        try:
            if cursor_key is not None and cursor_key in self._index:
                row = self._index[cursor_key]
                if row != self.cursor_row:
                    self.cursor_row = row
                    self.scroll_to(y=max(row - screen_offset, 0), animate=False, immediate=True)
            elif self._keys:
                self.cursor_row = min(self.cursor_row, len(self._keys) - 1)
        finally:
            self._quiet = False
        self.refresh()

    def move_to(self, key: str) -> bool:
        """Put the cursor on the row of ``key`` (as the user would); False if there is none."""
        row = self._index.get(key)
        if row is None:
            return False
        self.cursor_row = row
        return True

    # --- cursor ---------------------------------------------------------------------------------------

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._keys) - 1)) if self._keys else 0

    def watch_cursor_row(self, row: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        if not self._quiet and self._keys:
            self.post_message(self.RowHighlighted(self, self._keys[row]))

    def _scroll_to_cursor(self) -> None:
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def _page(self) -> int:
        return max(self.scrollable_content_region.height - 2, 1)

    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_page_up(self) -> None:
        self.cursor_row -= self._page()

    def action_page_down(self) -> None:
        self.cursor_row += self._page()

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = len(self._keys) - 1

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + round(self.scroll_x)
            for column in self.columns:
                if x < column.width + 2:
                    self.post_message(self.HeaderClicked(self, column.key))
                    return
                x -= column.width + 2
            return
        row = round(self.scroll_y) + event.y - 1
        if 0 <= row < len(self._keys):
            if row == self.cursor_row:
                self.action_select()
            else:
                self.cursor_row = row

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # --- drawing --------------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = round(self.scroll_x)
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("live-grid--header")
            strip = self._strip([(label, style) for label, style in self._labels], base + header)
            return strip.crop_extend(scroll_x, scroll_x + width, base + header)
        row = round(self.scroll_y) + y - 1
        if row >= len(self._keys):
            return Strip.blank(width, base)
        key = self._keys[row]
        kind = ""
        if row == self.cursor_row:
            kind = "live-grid--cursor" if self.has_focus else "live-grid--cursor-blurred"
        cells = tuple((c.text, c.style) for c in self._cells[key])
        cached = self._strips.get((key, kind))
        if cached is None or cached[0] != cells:
            style = base + self.get_component_rich_style(kind) if kind else base
            cached = (cells, self._strip(list(cells), style, cursor=bool(kind)))
            self._strips[(key, kind)] = cached
        return cached[1].crop_extend(scroll_x, scroll_x + width, base)

    def _strip(self, cells: list[tuple[str, str]], row_style: Style, *, cursor: bool = False) -> Strip:
        segments = []
        for column, (text, spec) in zip(self.columns, cells, strict=False):
            # On the cursor row the cursor's colors win, as they do in Textual's own tables.
            style = row_style + _style(spec) if spec and not cursor else row_style
            segments.append(Segment(f" {_fit(text, column.width)} ", style))
        return Strip(segments)

    def notify_style_update(self) -> None:
        self._strips.clear()
        super().notify_style_update()
