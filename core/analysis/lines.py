"""What a terminal would have shown for a log line: the one definition of log-line cleaning.

Pure (imports only `re` and `typing`). Two readers use it. The error analyzer wants the readable
text of a line, rank and host tags kept and a progress bar that a crash message was glued to
dropped (`clean_line`). The progress parsers want the newest frame of a line that a bar redraws
with carriage returns, as it was shown (`last_frames`, `last_complete_frame`, `clean_frame`).

A *physical line* is what lies between two newlines in the file. Progress bars (tqdm, Keras) redraw
themselves by writing `\\r` and the next *frame* without a newline, so one physical line can hold
thousands of frames; the frames here are found from the end, so the cost follows the newest frames,
not the length of the line.
"""
from __future__ import annotations

import re
from typing import List, Tuple

# CSI sequences (colours, cursor moves), OSC sequences (window titles) and other two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BACKSPACES = re.compile(r"\x08+")
# The end of a tqdm bar: "| 450/1000 [01:02<01:16, 7.2it/s, loss=0.3]" or "450it [01:02, 7.2it/s]".
# Whatever a crash glued after the bar is the part worth reading.
_BAR_END = re.compile(
    r"(?:\| ?\d[\d.]*[kMGTPEZY]?/\d[\d.]*[kMGTPEZY]?|\dit) \[[\d:]+(?:<[\d:?]+)?(?:, [^\]]{0,300})?\]"
)
# Tags that launchers and loggers put before the real message; stripped (repeatedly) before
# matching so that a regex may anchor on "^Killed$" whatever ran the task. PyTorch's C++ level
# tag ("[W1121 19:43:12.123 12 socket.cpp:12]") stays: patterns use it to ignore warnings.
_PREFIX = re.compile(
    r"(?:\[(?:rank|default)?\d{1,6}\]:"  # torchrun / DDP: "[rank3]:", "[default0]:"
    r"|\[\d{1,6},\d{1,6}\]<std(?:out|err)>:"  # mpirun --tag-output: "[1,0]<stderr>:"
    r"|\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?(?: -|:)?"  # timestamps
    r"|\d{1,6}:(?= )"  # srun --label: "0: "
    r"|[A-Za-z][\w.-]{0,62}\d[\w.-]{0,62}:(?= ))"  # pdsh / per-host tags: "gpu-node07: "
    r"\s*"
)
#: Cursor up: tqdm writes it after every frame of a bar that is not the first on screen (position
#: > 0: an evaluation bar under the training bar, the inner bar of nested loops).
CURSOR_UP = "\x1b[A"


# -- the readable text, for the error analyzer ----------------------------------------------
def clean_line(raw: str, *, keep_indent: bool = False) -> str:
    """The readable text of a log line: what a terminal would have shown last.

    Keeps only the text after the last carriage return (a progress bar redraws itself with
    `\\r`), drops ANSI escapes and other control characters, and drops a tqdm bar that a crash
    message was glued to. Rank and host prefixes stay: they say where the error happened.
    `keep_indent` keeps leading spaces, for showing tracebacks as they were printed.
    """
    start, end = last_segment(raw)
    text = clean_text(raw[start:end])
    return text.rstrip() if keep_indent else text.strip()


def last_segment(raw: str) -> Tuple[int, int]:
    """Bounds of the text after the last carriage return, ignoring trailing whitespace."""
    end = len(raw.rstrip())
    return raw.rfind("\r", 0, end) + 1, end


def clean_text(text: str) -> str:
    """`text` without escapes and control characters, and without a tqdm bar glued before a message."""
    text = _CONTROL.sub(" ", _ANSI.sub("", text))
    if "|" in text or "it [" in text:  # a cheap test first: the bar regex is slow to scan with
        bar_ends = [m.end() for m in _BAR_END.finditer(text)]
        if bar_ends:
            text = text[bar_ends[-1]:]
    return text


def strip_prefixes(text: str) -> str:
    """`text` without the launcher and logger tags before it: "[rank3]:", "0: ", "gpu-node07: ", a timestamp."""
    position = 0
    while True:
        match = _PREFIX.match(text, position)
        if match is None:
            return text[position:]
        position = match.end()


# -- frames, for the progress parsers -------------------------------------------------------
def apply_backspaces(text: str) -> str:
    """`text` with each backspace erasing the character before it (Keras erases its bar this way).

    A run of backspaces at the very end erases nothing: it prepares the next frame, which has not
    been written yet, and the frame it would erase is still what the terminal shows.
    """
    if "\x08" not in text:
        return text
    text = text.rstrip("\x08")
    kept: List[str] = []  # pieces of text still shown
    position = 0
    for run in _BACKSPACES.finditer(text):
        if run.start() > position:
            kept.append(text[position:run.start()])
        erase = run.end() - run.start()
        while erase and kept:
            last = kept[-1]
            if len(last) <= erase:
                erase -= len(last)
                kept.pop()
            else:
                kept[-1] = last[:-erase]
                erase = 0
        position = run.end()
    kept.append(text[position:])
    return "".join(kept)


def clean_frame(frame: str) -> str:
    """The text of one frame as the terminal showed it: escapes dropped, backspaces applied, trimmed."""
    if "\x1b" in frame:
        frame = _ANSI.sub("", frame)
    frame = apply_backspaces(frame)
    return _CONTROL.sub(" ", frame).strip()


#: What a blank frame is made of: a bar clearing itself writes spaces, Keras backspaces.
_BLANK = " \t\x08\r"


def _is_blank(frame: str) -> bool:
    return not frame.strip(_BLANK + "\n")


def frames(physical: str) -> List[str]:
    """The frames of a physical line, oldest first, blank ones (a bar clearing itself) left out.

    Splits the whole line: for the newest frames of a long line use `last_frames`.
    """
    return [frame for frame in physical.rstrip("\n").split("\r") if not _is_blank(frame)]


def _newest_frames(text: str, end: int, count: int) -> List[str]:
    """The newest `count` non-blank frames of `text[:end]`, newest first, trailing blanks trimmed.

    Goes back one carriage return at a time with `rfind`; a run of blank frames (a bar clearing
    itself, a burst of backspaces) is skipped in one `rstrip`, so no input costs a Python loop per
    character.
    """
    found: List[str] = []
    while end > 0 and len(found) < count:
        if text[end - 1] in _BLANK:
            end = len(text[:end].rstrip(_BLANK))
            if end == 0:
                break
        start = text.rfind("\r", 0, end) + 1
        found.append(text[start:end])
        end = start - 1
    return found


def last_frames(physical: str, count: int = 2) -> Tuple[str, ...]:
    """The newest `count` non-blank frames of a physical line, newest first, as written (not cleaned).

    Only the end of the line is read, however long it is. For the unended end of a file still being
    written the first frame may be a partial write ("450/10" of "450/1000"); the next one is whole.
    """
    text = physical.rstrip("\n")
    return tuple(_newest_frames(text, len(text), count))


def last_complete_frame(physical: str, terminated: bool) -> str:
    """The newest frame of a physical line that is known to be whole, as written ("" if none).

    For a line that ended with a newline that is its last non-blank frame. For the unended end of
    a file still being written, the text after the last carriage return may be a partial write,
    so it is the newest non-blank frame that a carriage return followed; "" when there is none.
    """
    text = physical.rstrip("\n") if terminated else physical
    end = len(text) if terminated else text.rfind("\r")
    found = _newest_frames(text, end, 1) if end > 0 else []
    return found[0] if found else ""


def shown_text(physical: str, terminated: bool = True) -> str:
    """What a terminal showed last of a physical log line: its newest frame (a `\\r`-redrawn bar keeps
    only the last one; the end of a log still being written keeps its newest *whole* frame), escapes
    and backspaces applied, indentation kept."""
    if "\r" in physical:
        if terminated:
            newest = last_frames(physical, 1)
            frame = newest[0] if newest else ""
        else:
            frame = last_complete_frame(physical, terminated=False)
    else:
        frame = physical
    text = clean_frame(frame)
    indent = len(frame) - len(frame.lstrip(" ")) if text else 0
    return " " * indent + text
