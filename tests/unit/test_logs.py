"""core.logs: the levelled lines of jobmon's processes, without the logging module."""
from __future__ import annotations

import io
import re

from core.logs import DEBUG, WARNING, Log


def configured(tag: str = "", level: int = 20) -> tuple[Log, io.StringIO]:
    lines = io.StringIO()
    log = Log()
    log.stream, log.tag, log.level = lines, tag, level
    return log, lines


def test_a_line_carries_time_tag_level_and_the_formatted_message():
    log, lines = configured("7 pid=42")
    log.info("job %s: %d polls", "7", 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} 7 pid=42 INFO job 7: 3 polls\n", lines.getvalue())


def test_lines_below_the_level_are_left_out():
    log, lines = configured(level=WARNING)
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    assert [line.split()[-2:] for line in lines.getvalue().splitlines()] == [["WARNING", "c"], ["ERROR", "d"]]


def test_unconfigured_it_writes_warnings_bare_to_standard_error(capsys):
    log = Log()
    log.info("not shown")
    log.warning("disk %s", "full")
    assert capsys.readouterr().err == "disk full\n"


def test_exception_appends_the_traceback_of_the_exception_being_handled():
    log, lines = configured(level=DEBUG)
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("step %s failed", 3)
    first, *rest = lines.getvalue().splitlines()
    assert first.endswith("ERROR step 3 failed") and rest[0].startswith("Traceback") and "KeyError" in rest[-1]


def test_a_wrong_format_keeps_the_line_and_a_failed_write_loses_only_the_line():
    log, lines = configured()
    log.info("%d jobs", "many")
    assert lines.getvalue().rstrip().endswith("%d jobs ('many',)")

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    log.stream = Full()
    log.error("lost, and no exception")
    log.stream = lines
    log.error("the next one is written")
    assert lines.getvalue().rstrip().endswith("ERROR the next one is written") and "lost" not in lines.getvalue()
