"""Following a log while the job writes it: only what was added is read, whatever the log's size."""
from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from core.progress import follow as follow_module
from core.progress.follow import MAX_PENDING, MAX_READ, FollowedLog, follow


def write(path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as handle:
        handle.write(data)


def test_reads_only_what_was_added_and_keeps_the_unended_line(tmp_path):
    log = tmp_path / "job.err"
    write(log, b"loading\n 10%|#  | 10/100 [00:01<00:09]\r 20%|## | 20/100")
    first = follow([FollowedLog(str(log))], now=10.0)
    assert first.chunks[0].lines == ("loading",)
    assert first.chunks[0].pending.endswith("20/100")
    write(log, b" [00:02<00:08]\r 30%|###| 30/100 [00:03<00:07]\ndone\n")
    second = follow(first.logs, now=20.0)
    chunk = second.chunks[0]
    assert chunk.lines == (
        " 10%|#  | 10/100 [00:01<00:09]\r 20%|## | 20/100 [00:02<00:08]\r 30%|###| 30/100 [00:03<00:07]", "done")
    assert chunk.pending == "" and second.logs[0].grown_at == 20.0
    assert follow(second.logs, now=30.0).chunks == ()  # nothing new: nothing read


def test_a_burst_bigger_than_the_bound_is_read_from_its_end_only(tmp_path, monkeypatch):
    monkeypatch.setattr(follow_module, "MAX_READ", 1000)
    log = tmp_path / "job.out"
    write(log, b"")
    start = follow([FollowedLog(str(log))], now=1.0)
    write(log, b"".join(b"line %05d\n" % n for n in range(1000)))  # 11,000 bytes
    chunk = follow(start.logs, now=2.0).chunks[0]
    assert chunk.skipped == 11000 - 1000
    assert chunk.lines[-1] == "line 00999" and len(chunk.lines) < 100
    assert all(line.startswith("line ") and len(line) == 10 for line in chunk.lines)  # no cut first line


def test_the_cost_of_a_poll_follows_the_growth_not_the_size(tmp_path):
    log = tmp_path / "huge.out"
    with open(log, "wb") as handle:
        handle.truncate(10 * 1024 ** 3 - 1)  # a sparse 10 GB log
    write(log, b"\n")
    start = follow([FollowedLog(str(log), offset=0)], now=1.0)
    assert start.chunks[0].skipped == 10 * 1024 ** 3 - MAX_READ
    write(log, b"step 5/10\n")
    chunk = follow(start.logs, now=2.0).chunks[0]
    assert chunk.lines == ("step 5/10",) and chunk.skipped == 0


def test_a_replaced_or_truncated_log_is_read_again_from_its_start(tmp_path):
    log = tmp_path / "job.out"
    write(log, b"old content that is long\n")
    seen = follow([FollowedLog(str(log))], now=1.0)
    os.replace(_new_file(tmp_path, b"new\n"), log)  # replaced: another inode
    after = follow(seen.logs, now=2.0)
    assert after.chunks[0].restarted and after.chunks[0].lines == ("new",)
    write(log, b"x\n", mode="wb")  # truncated in place, then written again (shorter than before)
    truncated = follow(after.logs, now=3.0).chunks[0]
    assert truncated.restarted and truncated.lines == ("x",)


def _new_file(folder, data: bytes) -> str:
    path = str(folder / "replacement")
    write(path, data, mode="wb")
    return path


def test_missing_logs_are_waited_for_and_unreadable_ones_reported(tmp_path):
    missing = FollowedLog(str(tmp_path / "not-yet.out"))
    folder = FollowedLog(str(tmp_path))  # a directory: reading it fails, which is not a stall
    result = follow([missing, folder], now=1.0)
    assert result.logs == (missing, folder) and result.chunks == ()
    assert len(result.errors) == 1 and str(tmp_path) in result.errors[0]


def test_a_character_cut_by_the_writer_is_read_whole_next_time(tmp_path):
    log = tmp_path / "bar.err"
    bar = "██▌ 5/10".encode()
    write(log, bar[:2])  # half of the first block character
    first = follow([FollowedLog(str(log))], now=1.0)
    write(log, bar[2:] + b"\n")
    second = follow(first.logs, now=2.0)
    assert second.chunks[0].lines == ("██▌ 5/10",)


def test_the_unended_line_kept_between_polls_is_bounded(tmp_path):
    log = tmp_path / "bar.err"
    write(log, b"\r" + b"\r".join(b"%6d/1000000" % n for n in range(20000)))
    result = follow([FollowedLog(str(log))], now=1.0)
    assert len(result.logs[0].pending) == MAX_PENDING
    assert result.logs[0].pending.endswith(" 19999/1000000")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_whatever_is_appended_every_complete_line_is_seen_once(tmp_path_factory, pieces):
    log = tmp_path_factory.mktemp("f") / "log"
    write(log, b"", mode="wb")
    logs = (FollowedLog(str(log)),)
    seen = []
    for n, piece in enumerate(pieces):
        write(log, piece)
        result = follow(logs, now=float(n))
        logs = result.logs
        seen.extend(line for chunk in result.chunks for line in chunk.lines)
    expected = b"".join(pieces).decode("utf-8", errors="replace").split("\n")[:-1]
    assert len(seen) == len(expected)
