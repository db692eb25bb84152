"""The log lines of jobmon's processes: `log.info(...)` everywhere, `log_to(stream, tag)` once per process.

Not the logging module: importing it (with traceback, string and their imports) costs each
detached daemon about half a megabyte of the 16 MB it may use, and jobmon only ever writes
levelled lines to one stream. A line that cannot be written is dropped: a full disk must not
stop a monitor.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}


class Log:
    """Where lines go and from which level. Unconfigured it behaves as Python's own last resort does:
    warnings and errors, the bare message, to standard error."""

    def __init__(self) -> None:
        self.stream: Optional[TextIO] = None  # None: sys.stderr as it is when the line is written
        self.level = WARNING
        self.tag: Optional[str] = None  # None: the bare message; else time, tag (may be empty) and level

    def debug(self, message: str, *args: object) -> None:
        self._write(DEBUG, message, args)

    def info(self, message: str, *args: object) -> None:
        self._write(INFO, message, args)

    def warning(self, message: str, *args: object) -> None:
        self._write(WARNING, message, args)

    def error(self, message: str, *args: object) -> None:
        self._write(ERROR, message, args)

    def exception(self, message: str, *args: object) -> None:
        """An error line followed by the traceback of the exception being handled."""
        import traceback  # only when something broke

        self._write(ERROR, message, args, traceback.format_exc().rstrip("\n"))

    def _write(self, level: int, message: str, args: tuple, extra: str = "") -> None:
        if level < self.level:
            return
        try:
            text = message % args if args else message
        except (TypeError, ValueError):  # a wrong format must not lose the line
            text = f"{message} {args!r}"
        if self.tag is not None:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
            text = " ".join(part for part in (stamp, self.tag, _LEVEL_NAMES[level], text) if part)
        if extra:
            text = f"{text}\n{extra}"
        stream = self.stream or sys.stderr
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a full disk, a closed stream
            pass


log = Log()


def log_to(stream: TextIO, tag: str = "", level: int = INFO) -> None:
    """Send this process's lines to `stream` from `level` on, each as `time [tag] LEVEL message`."""
    log.stream, log.tag, log.level = stream, tag, level
