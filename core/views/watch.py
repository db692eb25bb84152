"""`jobmon status --watch`: a full-screen view of the monitored jobs, refreshed from `status`'s own rows.

The screens are pure (rows or a JobDetail and a size in, a Screen of text lines out) and so is the
key handling (`handle_key`); `run_watch` is the thin curses loop around them: it asks `fetch` for
fresh rows every `interval` seconds (the caller's collect_status: the shared squeue snapshot, no
other scheduler call), redraws on keys and on a resize, and leaves the terminal as it found it on
`q`, on Ctrl-C (re-raised for the caller) and on any error (curses.wrapper).
"""
from __future__ import annotations

import curses
import locale
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from core.errors import JobmonError
from core.views.detail import (
    UNICODE,
    Glyphs,
    JobDetail,
    bar,
    clip,
    eta_cell,
    glyphs_for,
    percent_cell,
    render_detail,
)
from core.views.status import StatusRow

Fetch = Callable[[], Tuple[List[StatusRow], str]]
LoadDetail = Callable[[StatusRow], JobDetail]

#: Below this size the view only asks for a bigger terminal.
MIN_WIDTH, MIN_HEIGHT = 20, 5
LIST_KEYS = "q quit  j/k move  Enter detail"
DETAIL_KEYS = "Esc/Enter back  q quit"
FAILED_STATES = ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "UNREADABLE")


# -- screens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Screen:
    """Lines to draw top to bottom, the one to show selected, and a tone per line ("bad", "warn", "good",
    "title", "dim"; none: plain)."""

    lines: List[str]
    selected: Optional[int] = None
    tones: Dict[int, str] = field(default_factory=dict)


@dataclass
class _Column:
    key: str
    header: str
    cells: List[str]
    natural: int = 0
    width: int = 0


#: The name and the bar share what the other columns leave; the state may shrink to make room for them.
NAME_MIN, NAME_MAX, BAR_MIN, BAR_MAX, STATE_MIN = 6, 24, 12, 42, 7
CAPS = {"job": 20, "state": 14, "pct": 12, "eta": 10, "flags": 24}


def row_tone(row: StatusRow) -> str:
    """How a job's row is coloured: failed red, flagged yellow, completed green, pending dim."""
    state = row.state.split(" ", 1)[0] if row.state else ""
    if state in FAILED_STATES or row.monitor == "DEAD":
        return "bad"
    if row.flags or row.problem:
        return "warn"
    if state == "COMPLETED":
        return "good"
    if state == "PENDING":
        return "dim"
    return ""


def _columns(rows: Sequence[StatusRow], width: int) -> List[_Column]:
    """The list's columns sized to `width`: the name and the bar give way first, then whole columns go
    (bar, name, ETA, state); the job id, percent and flags stay (a line still too wide is cut)."""
    job_cells = [row.job_id if row.current_job in ("", row.job_id) else f"{row.job_id}->{row.current_job}"
                 for row in rows]
    columns = [
        _Column("job", "JOB", job_cells),
        _Column("name", "NAME", [row.name or "-" for row in rows]),
        _Column("state", "STATE", [row.state or "-" for row in rows]),
        _Column("bar", "PROGRESS", [""] * len(rows)),
        _Column("pct", "%", [percent_cell(row.progress) for row in rows]),
        _Column("eta", "ETA", [eta_cell(row.progress) for row in rows]),
        _Column("flags", "FLAGS", [" ".join(row.flags) for row in rows]),
    ]
    for column in columns:
        natural = max([len(column.header), *(len(cell) for cell in column.cells)])
        column.natural = column.width = min(natural, CAPS.get(column.key, natural))
    names = min(NAME_MAX, columns[1].natural)
    if not any(row.flags for row in rows):
        columns = [column for column in columns if column.key != "flags"]
    if not any(row.progress and row.progress.get("fraction") is not None for row in rows):
        columns = [column for column in columns if column.key != "bar"]
    for drop in ("", "bar", "name", "eta", "state"):
        columns = [column for column in columns if column.key != drop]
        if _fit(columns, width, names):
            break
    return columns


def _fit(columns: List[_Column], width: int, names: int) -> bool:
    """Size the name and bar columns (and shrink the state) to fit `width`; False when they cannot."""
    by_key = {column.key: column for column in columns}
    for column in columns:
        column.width = column.natural
    rigid = sum(column.width for column in columns if column.key not in ("name", "bar"))
    room = width - rigid - 2 * (len(columns) - 1)
    need = (NAME_MIN if "name" in by_key else 0) + (BAR_MIN if "bar" in by_key else 0)
    state = by_key.get("state")
    if room < need and state is not None:
        give = min(state.width - STATE_MIN, need - room)
        if give > 0:
            state.width -= give
            room += give
    if room < need:
        return False
    name, progress = by_key.get("name"), by_key.get("bar")
    if name is not None:
        name.width = min(names, room - (BAR_MIN if progress is not None else 0))
        room -= name.width
    if progress is not None:
        progress.width = min(BAR_MAX, room)
    return True


def render_list(rows: Sequence[StatusRow], warning: str, width: int, height: int, selected: int = 0,
                at: Optional[float] = None, interval: float = 0.0, glyphs: Glyphs = UNICODE) -> Screen:
    """The list: a title, the column headers, one row per job (scrolled a page at a time to keep the
    selected one in view), the keys on the last line."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return Screen([clip("terminal too small", width, glyphs)][:max(0, height)])
    stamp = time.strftime("%H:%M:%S", time.localtime(at)) if at is not None else ""
    every = f"every {interval:g}s  " if interval else ""
    count = f"{len(rows)} job" + ("" if len(rows) == 1 else "s")
    title = f"jobmon  {count}  {every}{stamp}".rstrip()
    lines = [title]
    tones = {0: "title"}
    if warning:
        tones[len(lines)] = "warn"
        lines.append(warning)
    footer_at = height - 1
    if not rows:
        lines.append("No monitored jobs.")
        lines = lines[:footer_at] + [""] * (footer_at - len(lines))
        return Screen([clip(line, width, glyphs) for line in lines + [LIST_KEYS]], tones=tones)
    columns = _columns(rows, width)
    lines.append(_join([column.header for column in columns], columns, glyphs))
    tones[len(lines) - 1] = "dim"
    visible = max(1, footer_at - len(lines))
    selected = min(max(0, selected), len(rows) - 1)
    start = (selected // visible) * visible
    top = len(lines)
    for index in range(start, min(len(rows), start + visible)):
        row = rows[index]
        cells = []
        for column in columns:
            if column.key == "bar":
                fraction = row.progress.get("fraction") if row.progress else None
                cells.append(bar(fraction, column.width, glyphs))
            else:
                cells.append(column.cells[index])
        tone = row_tone(row)
        if tone:
            tones[len(lines)] = tone
        lines.append(_join(cells, columns, glyphs))
    more = len(rows) - (start + visible)
    footer = LIST_KEYS + (f"  ({more} more below)" if more > 0 else "") + (f"  ({start} above)" if start else "")
    lines = lines[:footer_at] + [""] * (footer_at - len(lines))
    return Screen([clip(line, width, glyphs) for line in lines + [footer]],
                  selected=top + selected - start, tones=tones)


def _join(cells: Sequence[str], columns: Sequence[_Column], glyphs: Glyphs) -> str:
    return "  ".join(clip(cell, column.width, glyphs).ljust(column.width)
                     for cell, column in zip(cells, columns)).rstrip()


def render_detail_screen(detail: JobDetail, width: int, height: int, glyphs: Glyphs = UNICODE) -> Screen:
    """The detail of the selected job over the whole screen, the keys on the last line."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return Screen([clip("terminal too small", width, glyphs)][:max(0, height)])
    body = render_detail(detail, width, height - 1, glyphs)
    body += [""] * (height - 1 - len(body))
    tones = {0: "title"}
    tone = row_tone(detail.row)
    for index, line in enumerate(body):
        if line.startswith("health:") or line.startswith("problem:"):
            tones[index] = tone or "warn"
    return Screen(body + [clip(DETAIL_KEYS, width, glyphs)], tones=tones)


# -- keys ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewState:
    """Which job is selected (by id, so a refresh that reorders rows keeps it), whether its detail is
    open, whether to quit."""

    job_id: str = ""
    index: int = 0
    detail: bool = False
    quit: bool = False

    def settle(self, rows: Sequence[StatusRow]) -> ViewState:
        """The same job after a refresh, or the row now at its place when it left the list."""
        if not rows:
            return replace(self, job_id="", index=0, detail=False)
        ids = [row.job_id for row in rows]
        index = ids.index(self.job_id) if self.job_id in ids else min(self.index, len(rows) - 1)
        return replace(self, job_id=ids[index], index=index)


ENTER_KEYS = (curses.KEY_ENTER, 10, 13)
BACK_KEYS = (27, curses.KEY_BACKSPACE, 127, 8, curses.KEY_LEFT, ord("h"), *ENTER_KEYS)


def handle_key(state: ViewState, key: int, rows: Sequence[StatusRow], page: int = 10) -> ViewState:
    """The next state after a key: q quits; in the list arrows/j/k/PgUp/PgDn/Home/End move and Enter
    opens the detail; in the detail Esc, Backspace, Enter or Left goes back."""
    if key in (ord("q"), ord("Q")):
        return replace(state, quit=True)
    state = state.settle(rows)
    if not rows:
        return state
    if state.detail:
        return replace(state, detail=False) if key in BACK_KEYS else state
    if key in ENTER_KEYS:
        return replace(state, detail=True)
    moves = {curses.KEY_DOWN: 1, ord("j"): 1, curses.KEY_UP: -1, ord("k"): -1, curses.KEY_NPAGE: page,
             curses.KEY_PPAGE: -page, curses.KEY_HOME: -len(rows), ord("g"): -len(rows),
             curses.KEY_END: len(rows), ord("G"): len(rows)}
    if key not in moves:
        return state
    index = min(len(rows) - 1, max(0, state.index + moves[key]))
    return replace(state, index=index, job_id=rows[index].job_id)


# -- the curses loop -----------------------------------------------------------------------------
@dataclass
class _Data:
    rows: List[StatusRow]
    warning: str
    at: float


def run_watch(fetch: Fetch, load_detail: LoadDetail, *, interval: float, count: Optional[int] = None,
              color: bool = True) -> None:
    """Show the live view until `q` (or after `count` refreshes); KeyboardInterrupt reaches the caller
    once the terminal is restored. Raises JobmonError when this terminal cannot be driven."""
    try:
        locale.setlocale(locale.LC_ALL, "")  # so curses writes UTF-8 where the terminal speaks it
    except locale.Error:  # LANG names a locale this machine lacks: stay in C, draw ASCII
        pass
    glyphs = glyphs_for(locale.getpreferredencoding(False))
    try:
        curses.setupterm()
    except curses.error as exc:
        raise JobmonError(f"this terminal cannot show the live view ({exc}); "
                          "`jobmon status --watch | cat` prints plain refreshes instead") from None
    if hasattr(curses, "set_escdelay"):
        curses.set_escdelay(25)  # Esc answers at once, not after a second
    curses.wrapper(_loop, fetch, load_detail, interval, count, color, glyphs)


def _refresh(fetch: Fetch, previous: Optional[_Data]) -> _Data:
    try:
        rows, warning = fetch()
    except JobmonError as exc:  # a state folder being rewritten: keep the last rows, say why, try again
        return _Data(previous.rows if previous else [], str(exc), time.time())
    return _Data(rows, warning, time.time())


def _loop(window: curses.window, fetch: Fetch, load_detail: LoadDetail, interval: float, count: Optional[int],
          color: bool, glyphs: Glyphs) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    attributes = _attributes(color)
    data = _refresh(fetch, None)
    refreshes = 1
    due = time.monotonic() + interval
    state = ViewState().settle(data.rows)
    detail: Optional[JobDetail] = None
    while True:
        height, width = window.getmaxyx()
        if state.detail and (detail is None or detail.row.job_id != state.job_id):
            detail = load_detail(data.rows[state.index])
        if state.detail and detail is not None:
            screen = render_detail_screen(detail, width, height, glyphs)
        else:
            screen = render_list(data.rows, data.warning, width, height, state.index, data.at, interval, glyphs)
        _draw(window, screen, width, height, attributes)
        window.timeout(max(0, math.ceil((due - time.monotonic()) * 1000)))  # rounded up: no busy last ms
        key = window.getch()
        if key == -1:
            if time.monotonic() < due:
                continue
            if count is not None and refreshes >= count:
                return
            data = _refresh(fetch, data)
            refreshes += 1
            due = time.monotonic() + interval
            state, detail = state.settle(data.rows), None
            continue
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            continue
        state = handle_key(state, key, data.rows, page=max(1, height - 4))
        if state.quit:
            return
        if not state.detail:
            detail = None


def _attributes(color: bool) -> Dict[str, int]:
    """Tone -> curses attribute: colours unless NO_COLOR or a terminal without them; bold and dim then."""
    plain = {"title": curses.A_BOLD, "bad": curses.A_BOLD, "warn": curses.A_BOLD, "good": 0, "dim": curses.A_DIM}
    if not color or not curses.has_colors():
        return plain
    try:
        curses.start_color()
        curses.use_default_colors()
        background = -1
    except curses.error:
        background = curses.COLOR_BLACK
    pairs = {"bad": curses.COLOR_RED, "warn": curses.COLOR_YELLOW, "good": curses.COLOR_GREEN,
             "title": curses.COLOR_CYAN}
    tones = dict(plain)
    for number, (tone, foreground) in enumerate(pairs.items(), start=1):
        try:
            curses.init_pair(number, foreground, background)
        except curses.error:
            continue
        tones[tone] = curses.color_pair(number) | (curses.A_BOLD if tone in ("title", "bad") else 0)
    return tones


def _draw(window: curses.window, screen: Screen, width: int, height: int, attributes: Dict[str, int]) -> None:
    window.erase()
    encoding = window.encoding
    for y, line in enumerate(screen.lines[:height]):
        attribute = attributes.get(screen.tones.get(y, ""), 0)
        if y == screen.selected:
            attribute |= curses.A_REVERSE
            line = line.ljust(width)
        text = line[:width].encode(encoding, "replace").decode(encoding, "replace")
        try:
            window.addstr(y, 0, text, attribute)
        except curses.error:
            pass  # writing the bottom-right cell moves the cursor off the screen: the text is drawn
    window.refresh()
