"""`status --watch` and `show`: the pure screens (rows or a job's detail and a size in, lines out), the
keys, the curses loop driven through a scripted window, the real curses view in a pseudo-terminal,
and the plain repeated output when stdout is not a terminal (bounded with --count: nothing hangs)."""
from __future__ import annotations

import curses
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

import jobmon
from core.analysis.finding import Finding
from core.analysis.lines import shown_text
from core.daemon.liveness import this_host
from core.notify.events import EventKind, Route
from core.notify.message import Message
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery
from core.progress.reading import Reading, Sample, Source
from core.slurm.model import JobState
from core.state.model import FinalRecord, JobRecord, LiveState, MonitorInfo
from core.state.store import StateStore
from core.views import watch
from core.views.detail import (
    ASCII,
    UNICODE,
    JobDetail,
    LogTail,
    bar,
    clip,
    read_log,
    render_detail,
    sparkline,
)
from core.views.status import StatusRow
from core.views.watch import ViewState, handle_key, render_detail_screen, render_list, row_tone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOW = 1_790_000_000.0
TQDM = ("\r  0%|          | 0/100 [00:00<?, ?it/s]\r 44%|####4     | 44/100 [00:20<00:25,  2.2it/s]"
        "\r 45%|####5     | 45/100 [00:20<00:25,  2.2it/s]")


def progress(fraction, eta=4320.0, confident=True, done=45.0, total=100.0):
    return {"done": done, "total": total, "fraction": fraction, "unit": "it", "eta_seconds": eta,
            "eta_low_seconds": eta and eta * 0.9, "eta_high_seconds": eta and eta * 1.2, "eta_confident": confident,
            "source": Source.TQDM, "epoch": None, "epochs": None, "updated_at": NOW - 3}


def row(job_id="1001", **changes) -> StatusRow:
    values = dict(name="train-resnet50", state="RUNNING", monitor="ALIVE", elapsed="01:02:03", host="login1",
                  pid=4242, last_poll=2.0, notification="none", progress=progress(0.45))
    values.update(changes)
    return StatusRow(job_id=job_id, **values)


ROWS = [
    row("1001", flags=["STALLED"]),
    row("1002", name="a-very-long-experiment-name-that-goes-on-and-on", progress=progress(0.9, eta=300.0,
                                                                                          confident=False)),
    row("1003", name="eval", state="PENDING", progress=None, monitor="ALIVE"),
    row("1004", name="sweep", state="OUT_OF_MEMORY", progress=progress(0.2, eta=None), monitor="DONE"),
    row("1005", name="count-only", progress=progress(None, eta=None, done=1200.0, total=None),
        flags=["HUNG", "TIME!", "MEM!"]),
]


def live_record(tmp_path, **changes) -> JobRecord:
    err, out = tmp_path / "run.err", tmp_path / "run.out"
    err.write_text("Traceback (most recent call last):\n  File \"train.py\", line 3\n" + TQDM + "\n")
    out.write_text("\x1b[32mepoch 1 done\x1b[0m\nloading batch\n")
    samples = [Sample(NOW - 600 + 60 * i, 0.05 * i) for i in range(1, 10)]
    record = JobRecord(
        "1001", name="train-resnet50", stdout_path=str(out), stderr_path=str(err), created_at=NOW - 900,
        monitor=MonitorInfo(pid=4242, host=this_host(), heartbeat=NOW - 2),
        live=LiveState(target="1001", started_at=NOW - 700, reading=Reading(45, 100, "it", Source.TQDM),
                       read_at=NOW - 3, samples=samples, advanced_at=NOW - 60, notes=["stalled:1"]),
        findings=[Finding("nccl_timeout", line="Watchdog caught collective operation timeout", hint="NCCL hung")],
        outbox=[OutboxEntry("1001:stalled:1", EventKind.STALLED, Route.ERROR, created_at=NOW - 30,
                            message=Message(title="Job 1001 stalled: no progress for 40m"), routed_at=NOW - 30,
                            deliveries={"discord-error": SinkDelivery(status=DeliveryStatus.DELIVERED)})])
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def detail_of(tmp_path, **changes) -> JobDetail:
    record = live_record(tmp_path, **changes)
    logs = tuple(read_log(path, 40) for path in (record.stderr_path, record.stdout_path))
    return JobDetail(row("1001", flags=["STALLED"]), record, logs, NOW)


# -- pure pieces ---------------------------------------------------------------------------------
def test_bar_clip_and_sparkline():
    assert bar(0.5, 12) == "[#####-----]"
    assert bar(1.5, 6) == "[####]" and bar(None, 6) == " " * 6 and bar(0.0, 4) == "[--]"
    assert clip("abcdef", 4) == "abc…" and clip("abcdef", 4, ASCII) == "abc~" and clip("abc", 4) == "abc"
    samples = [Sample(0, 0.0), Sample(20, 0.5), Sample(40, 0.5), Sample(50, 1.0)]
    assert sparkline(samples, 0, 50, 5) == "▁▅▅▅█"  # the flat stretch between 20 s and 40 s is a stall
    assert sparkline(samples, 0, 50, 5, ASCII) == "_===#"
    assert sparkline([], 0, 1, 5) == ""


@pytest.mark.parametrize("physical, terminated, expected", [
    (TQDM, True, " 45%|####5     | 45/100 [00:20<00:25,  2.2it/s]"),
    (TQDM, False, " 44%|####4     | 44/100 [00:20<00:25,  2.2it/s]"),  # the newest frame may be half written
    ("\x1b[1;31mERROR\x1b[0m: boom", True, "ERROR: boom"),
    ("    at line 3", True, "    at line 3"),
    ("50%\x08\x08\x0860%", True, "60%"),
    ("\r   \r", True, ""),
])
def test_shown_text_keeps_what_the_terminal_showed_last(physical, terminated, expected):
    assert shown_text(physical, terminated) == expected


def test_read_log_folds_frames_and_says_when_a_log_is_missing(tmp_path):
    path = tmp_path / "x.err"
    path.write_text("first\n\n" + TQDM)  # still being written: no newline after the bar
    tail = read_log(str(path), 10)
    assert tail.lines == ("first", " 44%|####4     | 44/100 [00:20<00:25,  2.2it/s]")
    path.write_text("first\n" + TQDM + "\n")
    assert read_log(str(path), 1).lines == (" 45%|####5     | 45/100 [00:20<00:25,  2.2it/s]",)
    assert read_log(str(tmp_path / "none"), 5) == LogTail(str(tmp_path / "none"), missing=True)


# -- the list ------------------------------------------------------------------------------------
def test_the_list_at_80x24_shows_bar_percent_eta_and_flags():
    screen = render_list(ROWS, "", 80, 24, selected=0, at=NOW, interval=3)
    assert len(screen.lines) == 24 and all(len(line) <= 80 for line in screen.lines)
    assert screen.lines[0].startswith("jobmon  5 jobs  every 3s")
    header = screen.lines[1]
    for title in ("JOB", "NAME", "STATE", "PROGRESS", "%", "ETA", "FLAGS"):
        assert title in header
    first = screen.lines[2]
    assert first.startswith("1001  train-resne…  RUNNING")  # the name gives way to the bar
    assert "[#" in first and "45%" in first and "1h12m" in first and first.endswith("STALLED")
    assert "90%" in screen.lines[3] and "5m?" in screen.lines[3]  # a rough ETA says so
    assert "a-very-long" in screen.lines[3] and "…" in screen.lines[3] and "goes-on-and-on" not in screen.lines[3]
    assert "1200 it" in screen.lines[6] and "HUNG TIME! MEM!" in screen.lines[6]  # any flag is shown
    assert screen.selected == 2
    assert screen.lines[-1].startswith("q quit")
    assert screen.tones[2] == "warn" and screen.tones[5] == "bad" and screen.tones[4] == "dim"


@pytest.mark.parametrize("width", [20, 24, 30, 40, 50, 60, 70, 80, 100, 132, 200])
@pytest.mark.parametrize("height", [5, 6, 10, 24, 50])
def test_every_size_fits(width, height):
    rows = ROWS * 4
    for selected in (0, 7, len(rows) - 1):
        screen = render_list(rows, "squeue unavailable, showing the last known states", width, height, selected)
        assert len(screen.lines) == height
        assert all(len(line) <= width for line in screen.lines)
        assert screen.selected is not None and rows[selected].job_id in screen.lines[screen.selected]
    detail = render_detail_screen(JobDetail(row(), None, now=NOW, problem="unreadable"), width, height)
    assert len(detail.lines) == height and all(len(line) <= width for line in detail.lines)


def test_narrow_terminals_drop_the_bar_then_the_name_then_eta_and_state():
    def header(width):
        return render_list(ROWS, "", width, 24).lines[1].split()

    assert header(80) == header(70) == ["JOB", "NAME", "STATE", "PROGRESS", "%", "ETA", "FLAGS"]
    assert "OUT_OF_M…" in render_list(ROWS, "", 70, 24).lines[5]  # the state shrank to keep the bar
    assert header(60) == ["JOB", "NAME", "STATE", "%", "ETA", "FLAGS"]
    assert header(50) == ["JOB", "STATE", "%", "ETA", "FLAGS"]
    assert header(40) == ["JOB", "STATE", "%", "FLAGS"]
    assert header(30) == header(20) == ["JOB", "%", "FLAGS"]
    assert render_list(ROWS[:1], "", 120, 24).lines[2].startswith("1001  train-resnet50  RUNNING  [####")
    assert render_list(ROWS, "", 19, 24).lines == ["terminal too small"]
    assert render_list(ROWS, "", 80, 4).lines == ["terminal too small"]


def test_columns_without_content_are_left_out_and_an_empty_list_says_so():
    plain = [row("1", progress=None), row("2", progress=None)]
    assert render_list(plain, "", 80, 10).lines[1].split() == ["JOB", "NAME", "STATE", "%", "ETA"]
    screen = render_list([], "squeue unavailable", 80, 10)
    assert screen.lines[1] == "squeue unavailable" and screen.lines[2] == "No monitored jobs."
    assert screen.selected is None and len(screen.lines) == 10


def test_a_long_list_scrolls_a_page_at_a_time_to_keep_the_selection_in_view():
    rows = [row(str(2000 + i), name=f"job{i}") for i in range(50)]
    screen = render_list(rows, "", 80, 24, selected=30)
    assert screen.lines[screen.selected].startswith("2030")
    assert "more below" in screen.lines[-1] and "above" in screen.lines[-1]
    last = render_list(rows, "", 80, 24, selected=49)
    assert last.lines[last.selected].startswith("2049") and "more below" not in last.lines[-1]


def test_tones():
    assert row_tone(row(state="FAILED")) == "bad" and row_tone(row(monitor="DEAD")) == "bad"
    assert row_tone(row(flags=["TIME!"])) == "warn" and row_tone(row(state="COMPLETED")) == "good"
    assert row_tone(row()) == ""


# -- keys ----------------------------------------------------------------------------------------
def test_keys_move_open_and_close_the_detail_and_quit():
    rows = ROWS
    state = ViewState().settle(rows)
    assert state.job_id == "1001"
    for key, index in ((ord("j"), 1), (curses.KEY_DOWN, 2), (ord("k"), 1), (curses.KEY_UP, 0), (curses.KEY_UP, 0),
                       (curses.KEY_END, 4), (curses.KEY_DOWN, 4), (ord("g"), 0), (curses.KEY_NPAGE, 4)):
        state = handle_key(state, key, rows)
        assert (state.index, state.job_id) == (index, rows[index].job_id)
    assert handle_key(state, ord("x"), rows) == state
    for back in (27, curses.KEY_BACKSPACE, 127, 10, curses.KEY_ENTER):
        opened = handle_key(state, 10, rows)
        assert opened.detail and opened.job_id == "1005"
        assert handle_key(opened, ord("j"), rows) == opened  # the detail stays on its job
        assert not handle_key(opened, back, rows).detail
    assert handle_key(state, ord("q"), rows).quit and handle_key(handle_key(state, 10, rows), ord("q"), rows).quit
    assert not handle_key(ViewState(), 10, []).detail  # nothing to open


def test_a_refresh_keeps_the_selected_job_or_its_place():
    state = ViewState(job_id="1003", index=2)
    assert state.settle(list(reversed(ROWS))).index == 2  # 1003 is still third
    assert state.settle([ROWS[0], ROWS[2]]).index == 1
    gone = state.settle([ROWS[0], ROWS[1]])
    assert (gone.index, gone.job_id) == (1, "1002")
    assert not ViewState(job_id="1003", index=2, detail=True).settle([]).detail


# -- the detail ----------------------------------------------------------------------------------
def test_the_detail_shows_progress_history_findings_events_and_folded_log_lines(tmp_path):
    detail = detail_of(tmp_path)
    lines = render_detail(detail, 100)
    text = "\n".join(lines)
    assert lines[0] == "job 1001  train-resnet50  RUNNING  elapsed 01:02:03"
    assert lines[1].startswith("[###") and "45%  45/100 it  (tqdm)" in lines[1]
    assert lines[2] == "ETA 1h12m (1h04m–1h26m)"
    assert "last advanced 1m ago" in text and "health: STALLED" in text
    assert "progress history (9 samples" in text and "▁" in text and "█" not in text
    assert "  45.0%  +5.0% in 1m" in text
    assert "findings (1)\n  nccl_timeout: Watchdog caught collective operation timeout" in text
    assert "stalled: Job 1001 stalled: no progress for 40m  [discord-error delivered]" in text
    assert "/run.err (last 3 lines)" in text  # a long path keeps its end
    assert "   45%|####5     | 45/100 [00:20<00:25,  2.2it/s]" in lines
    assert '    File "train.py", line 3' in lines  # indentation kept
    assert "  epoch 1 done" in lines and "\x1b" not in text and "\r" not in text


def test_the_detail_fits_80x24_and_gives_the_logs_what_is_left(tmp_path):
    detail = detail_of(tmp_path)
    screen = render_detail_screen(detail, 80, 24)
    assert len(screen.lines) == 24 and all(len(line) <= 80 for line in screen.lines)
    assert screen.lines[-1].startswith("Esc/Enter back")
    text = "\n".join(screen.lines)
    assert "45/100" in text and "nccl_timeout" in text and "run.err" in text
    small = render_detail_screen(detail, 40, 8, ASCII)
    assert len(small.lines) == 8 and all(len(line) <= 40 for line in small.lines)
    assert all(line.isascii() for line in render_detail(detail, 60, 30, ASCII) if "45/100" not in line)


def test_the_detail_of_a_record_that_cannot_be_read_or_that_has_no_progress(tmp_path):
    lines = render_detail(JobDetail(row(progress=None), None, now=NOW, problem="state file x is unreadable"), 80)
    assert "progress: no progress line understood" in lines
    assert lines[-1] == "cannot read the record: state file x is unreadable"
    ended = live_record(tmp_path, live=None, findings=[], outbox=[], final=FinalRecord(state=JobState.COMPLETED))
    lines = render_detail(JobDetail(row(state="COMPLETED", progress=None), ended, (), NOW), 80)
    assert "progress: no progress line understood" in lines and "logs: none known" in lines


def test_unicode_only_where_the_terminal_speaks_it():
    from core.views.detail import glyphs_for

    assert glyphs_for("UTF-8") is UNICODE and glyphs_for("utf8") is UNICODE
    assert glyphs_for("ANSI_X3.4-1968") is ASCII and glyphs_for(None) is ASCII


# -- the curses loop, on a scripted window -------------------------------------------------------
class ScriptedWindow:
    """Stands in for curses' window: answers getch from a script, records what was drawn."""

    encoding = "utf-8"

    def __init__(self, keys, size=(24, 80)):
        self.keys, self.size, self.frames, self.current = list(keys), size, [], {}

    def getmaxyx(self):
        return self.size

    def erase(self):
        self.current = {}

    def addstr(self, y, x, text, attribute=0):
        self.current[y] = (text, attribute)

    def refresh(self):
        self.frames.append([self.current[y][0] for y in sorted(self.current)])

    def timeout(self, ms):
        self.last_timeout = ms

    def getch(self):
        key = self.keys.pop(0)
        if key == -1:
            time.sleep(self.last_timeout / 1000)
        if key == "resize":
            self.size = (10, 40)
            return curses.KEY_RESIZE
        return key


@pytest.fixture
def no_terminal(monkeypatch):
    for name in ("curs_set", "update_lines_cols"):
        monkeypatch.setattr(curses, name, lambda *args: None)
    monkeypatch.setattr(curses, "has_colors", lambda: False)


def test_the_loop_draws_the_list_opens_the_detail_resizes_and_quits(no_terminal):
    fetched, loaded = [], []

    def fetch():
        fetched.append(1)
        return ROWS, ""

    def load(selected):
        loaded.append(selected.job_id)
        return JobDetail(selected, None, now=NOW, problem="none")

    window = ScriptedWindow([ord("j"), 10, 27, "resize", ord("q")])
    watch._loop(window, fetch, load, 3.0, None, True, UNICODE)
    assert len(fetched) == 1 and loaded == ["1002"]
    first, moved, opened, back, resized = window.frames
    assert first[2].startswith("1001") and moved[3].startswith("1002")
    assert opened[0].startswith("job 1002") and back[1].startswith("JOB")
    assert max(len(line) for line in resized) <= 40 and len(resized) == 10
    assert window.last_timeout <= 3000


def test_the_loop_refreshes_every_interval_and_stops_after_count(no_terminal):
    calls = []

    def fetch():
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise jobmon.JobmonError("state folder busy")
        return ROWS[: len(calls)], ""

    window = ScriptedWindow([-1] * 20)
    watch._loop(window, fetch, lambda r: JobDetail(r, None), 0.01, 3, False, ASCII)
    assert len(calls) == 3  # the third refresh shown for an interval, then the end
    assert any("state folder busy" in line for frame in window.frames for line in frame)
    assert any(frame[0].startswith("jobmon  3 jobs") for frame in window.frames)


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBMON_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")  # no Slurm: status answers from the state files
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    store = StateStore(str(tmp_path / "state"))
    record = live_record(tmp_path)
    record.created_at = time.time()
    store.create(record)
    return tmp_path


def run(capsys, *argv):
    code = jobmon.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_watch_without_a_terminal_prints_the_table_every_interval(home, capsys, monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    code, out, _ = run(capsys, "status", "--watch", "--interval", "2", "--count", "3")
    assert code == 0 and slept == [2.0, 2.0]
    stamps = [line for line in out.splitlines() if line.startswith("--- ")]
    assert len(stamps) == 3 and "(every 2s, Ctrl-C stops) ---" in stamps[0]
    assert len(re.findall(r"^JOB +NAME +STATE +PROGRESS", out, re.M)) == 3
    assert out.count("1001") == 3 and "STALLED" in out


def test_watch_without_a_terminal_stops_quietly_on_ctrl_c(home, capsys, monkeypatch):
    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    code, out, err = run(capsys, "status", "--watch")
    assert code == 0 and out.count("--- ") == 1 and "Interrupt" not in err


def test_watch_on_a_terminal_runs_the_view_with_colour_unless_no_color(home, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(jobmon, "_on_terminal", lambda: True)
    monkeypatch.setattr(watch, "run_watch", lambda fetch, load, **options: seen.append((fetch(), load, options)))
    assert run(capsys, "status", "--watch")[0] == 0
    (rows, warning), load, options = seen[0]
    assert [r.job_id for r in rows] == ["1001"] and options == {"interval": 3.0, "count": None, "color": True}
    assert "45/100" in "\n".join(render_detail(load(rows[0]), 100))
    monkeypatch.setenv("NO_COLOR", "1")
    assert run(capsys, "status", "--watch", "--interval", "5", "--count", "2")[0] == 0
    assert seen[1][2] == {"interval": 5.0, "count": 2, "color": False}

    def interrupted(*args, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "run_watch", interrupted)
    assert run(capsys, "status", "--watch")[:2] == (0, "")


@pytest.mark.parametrize("argv, expected", [
    (["status", "--watch", "--json"], "not allowed with"),
    (["status", "--watch", "--interval", "0.2"], "between 1 and 3600"),
    (["status", "--watch", "--count", "0"], "at least 1"),
    (["status", "--count", "2"], "--interval and --count go with --watch"),
])
def test_bad_watch_options_are_one_clear_line(home, capsys, argv, expected):
    try:
        code = jobmon.main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0 and expected in err and "Traceback" not in err


def test_show_prints_the_detail_once(home, capsys):
    code, out, _ = run(capsys, "show", "1001")
    assert code == 0
    assert out.startswith("job 1001  train-resnet50")
    assert "45%|####5     | 45/100" in out and "nccl_timeout" in out and "epoch 1 done" in out
    code, out, _ = run(capsys, "show", "--lines", "1", "1001")
    assert "(last 1 lines)" in out and "epoch 1 done" not in out and "loading batch" in out


def test_show_of_an_unknown_job_is_one_clear_line(home, capsys):
    code, out, err = run(capsys, "show", "999")
    assert code != 0 and out == ""
    assert err.strip().splitlines() == ["jobmon: error: job 999 is not monitored (see `jobmon status --all`)"]
    code, _, err = run(capsys, "show", "abc")
    assert code != 0 and "not a Slurm job id" in err


# -- the real curses view, in a pseudo-terminal ------------------------------------------------
def drive(home, keys, env_extra=None, timeout=20.0):
    """Run `jobmon status --watch` on a pseudo-terminal, send `keys` once the view shows, return
    (exit code, everything written to the terminal)."""
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(JOBMON_HOME=str(home), TERM="xterm-256color", PATH="/nonexistent", LANG="C.UTF-8", **(env_extra or {}))
    main, child = pty.openpty()
    os.set_blocking(main, False)
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "jobmon.py"), "status", "--watch", "--interval",
                                "1"], stdin=child, stdout=child, stderr=child, env=env, cwd=str(home),
                               start_new_session=True,  # then the terminal becomes its own: Ctrl-C is SIGINT
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(child)
    output = b""
    deadline = time.monotonic() + timeout
    pending = list(keys)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    output += os.read(main, 65536)
                except OSError:
                    break
            if pending and b"1001" in output:
                key, wait_for = pending[0]
                if wait_for is None or wait_for in output:
                    os.write(main, key)
                    pending.pop(0)
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=5), output.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux pseudo-terminal")
def test_the_real_view_shows_the_bar_opens_the_detail_and_quits_leaving_the_terminal(home):
    code, output = drive(home, [(b"\r", None), (b"\x1b", b"findings"), (b"q", None)])
    assert code == 0, output
    assert "45%" in output and "STALLED" in output and "findings" in output
    assert "\x1b[33m" in output  # the flagged row in yellow (NO_COLOR is not set)
    assert 'File "/' not in output  # no traceback of jobmon's (the log's own one is drawn in the detail)
    assert output.rstrip().endswith(("\x1b[?1049l", "\x1b[?1l\x1b>")) or "\x1b[?1049l" in output[-200:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux pseudo-terminal")
def test_the_real_view_ends_quietly_on_ctrl_c(home):
    code, output = drive(home, [(b"\x03", None)], {"NO_COLOR": "1"})
    assert code == 0 and "Traceback" not in output and "KeyboardInterrupt" not in output
    drawn = output.split("\x1b[?1049h", 1)[-1]
    assert not any(f"\x1b[3{colour}m" in drawn for colour in "1236")  # no red, green, yellow or cyan


def test_json_output_of_status_is_unchanged_by_watch_options(home, capsys):
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["jobs"][0]["job_id"] == "1001"
