"""core.analysis.logtail: the end of a log, read backwards with bounded cost whatever the file holds."""
from __future__ import annotations

import builtins

import pytest

from core.analysis import logtail
from core.analysis.logtail import DEFAULT_MAX_BYTES, MAX_LINE_CHARS, Tail, read_tail

BLOCK = 64 * 1024
MB = 1024 * 1024


def write(tmp_path, data: bytes, name: str = "job.out") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


class ReadCounter:
    """Wraps `open` inside core.analysis.logtail and adds up every byte handed out by the file objects."""

    def __init__(self) -> None:
        self.opened = 0
        self.bytes_read = 0

    def open(self, *args, **kwargs):
        self.opened += 1
        return _CountingFile(builtins.open(*args, **kwargs), self)


class _CountingFile:
    def __init__(self, handle, counter: ReadCounter) -> None:
        self._handle = handle
        self._counter = counter

    def _count(self, data):
        self._counter.bytes_read += len(data)
        return data

    def read(self, *args):
        return self._count(self._handle.read(*args))

    def read1(self, *args):
        return self._count(self._handle.read1(*args))

    def readline(self, *args):
        return self._count(self._handle.readline(*args))

    def readlines(self, *args):
        lines = self._handle.readlines(*args)
        self._counter.bytes_read += sum(len(line) for line in lines)
        return lines

    def readinto(self, buffer):
        count = self._handle.readinto(buffer)
        self._counter.bytes_read += count or 0
        return count

    def __iter__(self):
        for line in self._handle:
            yield self._count(line)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
        return False


@pytest.fixture
def counter(monkeypatch):
    counting = ReadCounter()
    monkeypatch.setattr(logtail, "open", counting.open, raising=False)
    return counting


# --- small files ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "max_lines, lines, whole",
    [
        (1, ("three",), False),
        (2, ("two", "three"), False),
        (3, ("one", "two", "three"), True),
        (10, ("one", "two", "three"), True),
    ],
)
def test_last_lines_of_a_small_file(tmp_path, max_lines, lines, whole):
    data = b"one\ntwo\nthree\n"
    tail = read_tail(write(tmp_path, data), max_lines=max_lines)
    assert tail == Tail(lines, whole, len(data))


@pytest.mark.parametrize(
    "data, lines",
    [
        (b"one\ntwo\nthree", ("one", "two", "three")),  # no trailing newline
        (b"one\r\ntwo\r\nthree\r\n", ("one", "two", "three")),  # CRLF
        (b"only", ("only",)),
        (b"\n\n", ("", "")),
    ],
    ids=["no-trailing-newline", "crlf", "one-line", "blank-lines"],
)
def test_line_endings(tmp_path, data, lines):
    tail = read_tail(write(tmp_path, data))
    assert tail.lines == lines
    assert tail.whole
    assert not any("\r" in line or "\n" in line for line in tail.lines)


def test_no_trailing_newline_with_more_lines_than_asked(tmp_path):
    tail = read_tail(write(tmp_path, b"a\nb\nc\nd"), max_lines=2)
    assert tail.lines == ("c", "d")
    assert not tail.whole


def test_invalid_utf8_and_nul_bytes_do_not_raise(tmp_path):
    data = b"ok\n\xff\xfe broken \xc3\n nul\x00byte\x00here\n\xe2\x82\n"
    tail = read_tail(write(tmp_path, data))
    assert len(tail.lines) == 4
    assert tail.lines[0] == "ok"
    assert "\ufffd" in tail.lines[1] and "broken" in tail.lines[1]
    assert "nul" in tail.lines[2] and "byte" in tail.lines[2] and "here" in tail.lines[2]
    assert "\ufffd" in tail.lines[3]
    assert not any("\x00" in line for line in tail.lines)


def test_multibyte_characters_survive(tmp_path):
    tail = read_tail(write(tmp_path, "ünïcödé ✓\nzweite Zeile — ok\n".encode()))
    assert tail.lines == ("ünïcödé ✓", "zweite Zeile — ok")


# --- odd or missing files ---------------------------------------------------------------

def test_missing_file_is_an_empty_tail(tmp_path):
    tail = read_tail(str(tmp_path / "does-not-exist.out"))
    assert tail.lines == ()
    assert tail.size == 0
    assert not tail.whole


def test_a_folder_is_an_empty_tail(tmp_path):
    assert read_tail(str(tmp_path)).lines == ()


def test_empty_file(tmp_path):
    assert read_tail(write(tmp_path, b"")) == Tail((), True, 0)


# --- big files --------------------------------------------------------------------------

@pytest.mark.parametrize("ending", [b"\n", b""], ids=["newline", "no-newline"])
def test_single_20mb_line_is_bounded(tmp_path, ending):
    data = b"A" * (10 * MB) + b"Z" * (10 * MB) + ending
    tail = read_tail(write(tmp_path, data))
    assert tail.size == len(data)
    assert not tail.whole
    assert len(tail.lines) == 1
    assert sum(len(line) for line in tail.lines) <= 3 * MAX_LINE_CHARS
    assert tail.lines[0].endswith("Z" * 100)


def test_long_line_keeps_head_and_tail(tmp_path):
    line = "HEAD" + "x" * (5 * MAX_LINE_CHARS) + "TAIL"
    tail = read_tail(write(tmp_path, (line + "\nshort\n").encode()))
    assert tail.lines[1] == "short"
    capped = tail.lines[0]
    assert capped.startswith("HEAD") and capped.endswith("TAIL")
    assert len(capped) <= 3 * MAX_LINE_CHARS


def test_200k_lines_gives_exactly_the_last_500_in_order(tmp_path):
    data = "".join(f"line {i}\n" for i in range(200_000)).encode()
    tail = read_tail(write(tmp_path, data), max_lines=500)
    assert tail.lines == tuple(f"line {i}" for i in range(199_500, 200_000))
    assert not tail.whole
    assert tail.size == len(data)


def test_reads_only_the_tail_of_a_small_last_part(tmp_path, counter):
    data = "".join(f"line {i}\n" for i in range(200_000)).encode()
    tail = read_tail(write(tmp_path, data), max_lines=10)
    assert tail.lines[-1] == "line 199999"
    assert counter.opened == 1
    assert 0 < counter.bytes_read <= BLOCK


def test_sparse_50mb_file_is_not_read_whole(tmp_path, counter):
    path = tmp_path / "sparse.out"
    with open(path, "wb") as handle:
        handle.truncate(50 * MB)
        handle.seek(0, 2)
        handle.write(b"\nfirst\nsecond\nlast line\n")
    tail = read_tail(str(path))
    assert counter.opened == 1, "the wrapper around open was not used"
    assert 0 < counter.bytes_read < DEFAULT_MAX_BYTES + BLOCK
    assert tail.lines[-3:] == ("first", "second", "last line")
    assert not tail.whole
    assert tail.size == 50 * MB + len(b"\nfirst\nsecond\nlast line\n")
    assert sum(len(line) for line in tail.lines) <= 3 * MAX_LINE_CHARS + 100


def test_max_bytes_bounds_the_read(tmp_path, counter):
    data = "".join(f"line {i}\n" for i in range(100_000)).encode()
    tail = read_tail(write(tmp_path, data), max_lines=100_000, max_bytes=10_000)
    assert counter.bytes_read <= 10_000
    assert tail.lines[-1] == "line 99999"
    assert not tail.whole
    # the partial first line is dropped, so every line returned is a whole one
    assert all(line.startswith("line ") for line in tail.lines)
