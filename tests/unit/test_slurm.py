"""core.slurm: the parsers fed the real Slurm 22.05 output in tests/fixtures/slurm (with the header
lines each command prints, tests/fixtures/slurm_headers), and the Slurm class driven through an
injected runner that replays that output and records each argv."""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import List, Sequence, Tuple

import pytest

from core.errors import SbatchRejected, SlurmError, SlurmUnavailable
from core.slurm.client import Slurm, current_user, run_command
from core.slurm.model import CommandResult, JobState, QueueEntry
from core.slurm.parse import (
    SACCT_DELIMITER,
    SACCT_FIELDS,
    SQUEUE_COLUMNS,
    parse_comments,
    parse_duration,
    parse_exit_code,
    parse_sacct,
    parse_scontrol_fields,
    parse_scontrol_show_job,
    parse_size,
    parse_squeue,
    parse_submit_lines,
    parse_timestamp,
    seconds_between,
    squeue_format,
)
from tests.support import HEADERS, SLURM_FIXTURES, header_line, read_text, slurm_output, submit_lines_output

K = 1024
#: The header lines squeue and sacct print for jobmon's own formats (real captures).
SQUEUE_HEADER = header_line("squeue_itrM.txt")  # JOBID|STATE|REASON|TIME
SACCT_HEADER = header_line("sacct_21_fields.txt")


def capture(name: str) -> str:
    """A capture exactly as recorded (with `-n`/`-h`: no header line)."""
    return read_text(SLURM_FIXTURES, name)


def sacct_rows(columns: Sequence[str], *rows: Sequence[str]) -> str:
    """sacct -P --delimiter='^|^' output for these columns (header first)."""
    return "".join(SACCT_DELIMITER.join(cells) + "\n" for cells in (columns, *rows))


class FakeRunner:
    """Stands in for run_command: returns one canned result and records every call."""

    def __init__(self, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.result = CommandResult(returncode, stdout, stderr)
        self.calls: List[Tuple[List[str], float]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append((list(argv), timeout))
        return self.result

    @property
    def argv(self) -> List[str]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][0]


# --- parse_squeue -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, expected",
    [
        ("squeue_running.txt", [("2", JobState.RUNNING, "None")]),
        ("squeue_completed.txt", [("2", JobState.COMPLETED, "None")]),
        ("squeue_failed.txt", [("3", JobState.FAILED, "NonZeroExitCode")]),
        ("squeue_oom.txt", [("4", JobState.OUT_OF_MEMORY, "OutOfMemory")]),
        ("squeue_cancelled.txt", [("5", JobState.CANCELLED, "None")]),
        ("squeue_cancelled_completing.txt", [("5", JobState.COMPLETING, "None")]),
        ("squeue_pending_held.txt", [("6", JobState.PENDING, "JobHeldUser")]),
        ("squeue_after_ctld_restart.txt", [("13", JobState.RUNNING, "None")]),
        (
            "squeue_array_running.txt",
            [
                ("7_[3-5%3]", JobState.PENDING, "JobArrayTaskLimit"),
                ("7_2", JobState.RUNNING, "None"),
                ("7_1", JobState.RUNNING, "None"),
                ("7_0", JobState.RUNNING, "None"),
            ],
        ),
        (
            "squeue_array_running_r.txt",
            [
                ("7_3", JobState.PENDING, "JobArrayTaskLimit"),
                ("7_4", JobState.PENDING, "JobArrayTaskLimit"),
                ("7_5", JobState.PENDING, "JobArrayTaskLimit"),
                ("7_2", JobState.RUNNING, "None"),
                ("7_1", JobState.RUNNING, "None"),
                ("7_0", JobState.RUNNING, "None"),
            ],
        ),
        (
            "squeue_array_done_r.txt",
            [
                ("7_5", JobState.COMPLETED, "None"),
                ("7_3", JobState.COMPLETED, "None"),
                ("7_2", JobState.COMPLETED, "None"),
                ("7_1", JobState.COMPLETED, "None"),
                ("7_0", JobState.COMPLETED, "None"),
                ("7_4", JobState.FAILED, "NonZeroExitCode"),
            ],
        ),
        (
            "squeue_het_deadline_r.txt",
            [("838+1", JobState.DEADLINE, "DeadLine"), ("838+0", JobState.PENDING, "Resources")],
        ),
    ],
)
def test_parse_squeue_fixtures(name, expected):
    entries = parse_squeue(slurm_output(name))
    assert [(e.job_id, e.state, e.reason) for e in entries] == expected


def test_parse_squeue_real_output_with_its_header():
    """squeue_itrM.txt is a whole stdout of jobmon's own format, header line included."""
    assert parse_squeue(read_text(HEADERS, "squeue_itrM.txt")) == [QueueEntry("75", JobState.RUNNING, "None", "0:03")]


def test_real_squeue_header_names_the_columns_jobmon_reads():
    assert squeue_format() == "%i|%T|%r|%M|%l|%L|%S|%N|%V|%P|%j"
    assert header_line("squeue_watch.txt").rstrip("\n").split("|") == [title for _, title in SQUEUE_COLUMNS]


def test_parse_squeue_reads_partition_and_a_name_with_the_delimiter_in_it():
    tasks_0, tasks_1, single = parse_squeue(read_text(HEADERS, "squeue_watch.txt"))
    assert (single.job_id, single.name, single.partition) == ("1266", "sweep-lr|3", "debug")
    assert (tasks_0.job_id, tasks_0.name, tasks_1.job_id) == ("1267_0", "other", "1267_1")
    assert single.submit_time == "2026-11-29T01:34:33"


def test_the_live_columns_as_the_real_squeue_prints_them():
    held, running = parse_squeue(read_text(HEADERS, "squeue_live.txt"))
    assert (running.time_limit, running.time_left, running.nodes) == ("5:00", "4:57", "vm")
    assert (running.start_time, running.submit_time) == ("2026-11-29T00:19:50", "2026-11-29T00:19:50")
    assert (held.reason, held.time_limit, held.start_time, held.nodes) == ("JobHeldUser", "1-00:00:00", "N/A", "")
    updated = parse_squeue(read_text(HEADERS, "squeue_live_updated.txt"))[0]
    assert (updated.time_limit, updated.time_left) == ("10:00", "9:56")  # after `scontrol update TimeLimit=10`
    assert parse_duration(updated.time_limit) == 600 and parse_duration(held.time_limit) == 86400
    assert seconds_between(held.submit_time, running.start_time) == 0.0
    assert seconds_between("2026-11-29T00:10:00", "2026-11-29T00:19:50") == 590.0
    assert parse_timestamp("N/A") is None and seconds_between("N/A", running.start_time) is None


def test_parse_squeue_three_column_output_has_empty_time_used():
    assert parse_squeue(header_line("squeue_itr.txt") + "7_[3-5%3]|PENDING|JobArrayTaskLimit\n") == [
        QueueEntry("7_[3-5%3]", JobState.PENDING, "JobArrayTaskLimit", ""),
    ]


def test_parse_squeue_four_column_row_matches_squeue_format():
    assert parse_squeue(SQUEUE_HEADER + "13|RUNNING|None|1:02:03\n") == [
        QueueEntry("13", JobState.RUNNING, "None", "1:02:03"),
    ]


def test_parse_squeue_reads_columns_by_header_not_by_position():
    text = "TIME|REASON|JOBID|STATE\n1:02:03|Priority|13|PENDING\n"
    assert parse_squeue(text) == [QueueEntry("13", JobState.PENDING, "Priority", "1:02:03")]


def test_parse_squeue_ignores_a_column_it_does_not_know():
    text = "JOBID|ACCOUNT|STATE|REASON|TIME\n13|gpu|RUNNING|None|0:05\n"
    assert parse_squeue(text) == [QueueEntry("13", JobState.RUNNING, "None", "0:05")]


def test_parse_squeue_missing_columns_get_their_defaults():
    assert parse_squeue("JOBID|STATE\n13|RUNNING\n") == [QueueEntry("13", JobState.RUNNING, "", "")]
    assert parse_squeue("JOBID|REASON\n13|None\n") == [QueueEntry("13", JobState.UNKNOWN, "None", "")]


def test_parse_squeue_without_a_job_id_column_has_no_rows():
    assert parse_squeue("STATE|REASON\nRUNNING|None\n") == []


def test_parse_squeue_headerless_capture_reads_nothing_as_a_job():
    """Rows without their header (an old `-h` capture) must not be mistaken for jobs."""
    assert parse_squeue(capture("squeue_running.txt")) == []


def test_parse_squeue_skips_junk_lines():
    text = (
        SQUEUE_HEADER
        + "\n"
        "   \n"
        "slurm_load_jobs error: Invalid job id specified\n"
        "2|RUNNING|None|0:01\n"
        "|RUNNING|None|0:01\n"  # no job id
        "garbage without any delimiter\n"
        "3|FAILED|NonZeroExitCode|0:00\n"
    )
    assert [e.job_id for e in parse_squeue(text)] == ["2", "3"]


def test_parse_squeue_strips_whitespace_and_parses_lower_case_state():
    assert parse_squeue(" JOBID | STATE | REASON | TIME \r\n  42 | pending | Priority | 0:00  \r\n") == [
        QueueEntry("42", JobState.PENDING, "Priority", "0:00"),
    ]


@pytest.mark.parametrize("text", ["", "\n", SQUEUE_HEADER])
def test_parse_squeue_empty_output(text):
    assert parse_squeue(text) == []


# --- parse_comments (squeue -o '%i|%k') -------------------------------------------------

def test_parse_comments_real_output():
    assert parse_comments(read_text(HEADERS, "squeue_ik.txt")) == [("75", "fixture-probe")]


def test_parse_comments_keeps_a_pipe_inside_the_comment():
    text = header_line("squeue_ik.txt") + "75|a|b | c\n76_[0-3]|jobmon-chain:70:2\n77|\n"
    assert parse_comments(text) == [("75", "a|b | c"), ("76_[0-3]", "jobmon-chain:70:2"), ("77", "")]


# --- JobState ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("CANCELLED by 0", JobState.CANCELLED),
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("cancelled", JobState.CANCELLED),
        ("Running", JobState.RUNNING),
        ("  COMPLETED\n", JobState.COMPLETED),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("TIMEOUT", JobState.TIMEOUT),
        ("REQUEUE_HOLD", JobState.REQUEUE_HOLD),
        ("", JobState.UNKNOWN),
        ("   ", JobState.UNKNOWN),
        ("BOGUS", JobState.UNKNOWN),
        ("by 0", JobState.UNKNOWN),
        ("RUNNINGX", JobState.UNKNOWN),
    ],
)
def test_job_state_parse(text, expected):
    assert JobState.parse(text) is expected


FINAL = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"]
NOT_FINAL = [
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "PREEMPTED", "SPECIAL_EXIT", "RESV_DEL_HOLD", "STOPPED", "UNKNOWN",
]


@pytest.mark.parametrize("name, final", [(n, True) for n in FINAL] + [(n, False) for n in NOT_FINAL])
def test_is_final(name, final):
    assert JobState(name).is_final is final


# --- parse_sacct ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, job_id, state, state_text, exit_code, signal, max_rss",
    [
        ("sacct_completed.txt", "2", JobState.COMPLETED, "COMPLETED", 0, 0, 216 * K),
        ("sacct_failed.txt", "3", JobState.FAILED, "FAILED", 3, 0, 0),
        ("sacct_purged_job.txt", "3", JobState.FAILED, "FAILED", 3, 0, 0),
        ("sacct_oom.txt", "4", JobState.OUT_OF_MEMORY, "OUT_OF_MEMORY", 0, 125, 0),
        ("sacct_cancelled.txt", "5", JobState.CANCELLED, "CANCELLED by 0", 0, 0, 216 * K),
        ("sacct_running.txt", "14", JobState.RUNNING, "RUNNING", 0, 0, None),
        ("sacct_controller_down.txt", "13", JobState.RUNNING, "RUNNING", 0, 0, None),
    ],
)
def test_parse_sacct_single_jobs(name, job_id, state, state_text, exit_code, signal, max_rss):
    records = parse_sacct(slurm_output(name))
    assert len(records) == 1, "step rows (.batch) must not become records of their own"
    record = records[0]
    assert (record.job_id, record.job_id_raw) == (job_id, job_id)
    assert record.state is state
    assert record.state_text == state_text
    assert (record.exit_code, record.signal) == (exit_code, signal)
    assert record.max_rss_bytes == max_rss
    assert not record.is_placeholder


def test_parse_sacct_completed_all_columns():
    (record,) = parse_sacct(slurm_output("sacct_completed.txt"))
    assert record.name == "probe-ok"
    assert record.elapsed == "00:00:04"
    assert record.time_limit == "365-00:00:00"
    assert record.req_mem == record.real_req_mem == "1G"
    assert record.nodes == record.real_nodes == "vm"
    assert record.partition == "debug"
    assert record.work_dir == "/tmp/jobmon-fixtures"
    assert record.start == "2026-11-21T20:06:30"
    assert record.end == "2026-11-21T20:06:34"
    assert record.user == "jobmon-probe"
    assert record.alloc_cpus == 0  # captured without the AllocCPUS column


def test_parse_sacct_real_output_with_its_header():
    """sacct_16_fields.txt is a whole stdout of jobmon's own sacct command, header line included."""
    (record,) = parse_sacct(read_text(HEADERS, "sacct_16_fields.txt"))
    assert (record.job_id, record.job_id_raw, record.name, record.state) == ("44", "44", "hello", JobState.COMPLETED)
    assert record.max_rss_bytes == 396 * K  # from the .batch step: the job row's MaxRSS is empty
    assert (record.time_limit, record.req_mem, record.user, record.alloc_cpus) == ("UNLIMITED", "1G", "jobmon-it", 1)
    (fifteen,) = parse_sacct(read_text(HEADERS, "sacct_15_fields.txt"))
    assert fifteen == dataclasses.replace(record, alloc_cpus=0)  # the same job without that column


def test_real_sacct_header_names_the_columns_jobmon_asks_for():
    assert SACCT_HEADER.rstrip("\n").split(SACCT_DELIMITER) == list(SACCT_FIELDS)
    assert header_line("sacct_19_fields.txt").rstrip("\n").split(SACCT_DELIMITER) == list(SACCT_FIELDS[:19])
    assert header_line("sacct_16_fields.txt").rstrip("\n").split(SACCT_DELIMITER) == list(SACCT_FIELDS[:16])
    assert header_line("sacct_15_fields.txt").rstrip("\n").split(SACCT_DELIMITER) == list(SACCT_FIELDS[:15])


def test_parse_sacct_reads_columns_by_header_not_by_position():
    columns = ("State", "MaxRSS", "ExitCode", "JobName", "JobID", "ReqMem", "JobIDRaw", "AllocCPUS")
    text = sacct_rows(columns, ("OUT_OF_MEMORY", "", "0:125", "train", "4", "100M", "4", "2"),
                      ("OUT_OF_MEMORY", "102400K", "0:125", "batch", "4.batch", "", "4.batch", "2"))
    (record,) = parse_sacct(text)
    assert (record.job_id, record.job_id_raw, record.name) == ("4", "4", "train")
    assert (record.state, record.exit_code, record.signal) == (JobState.OUT_OF_MEMORY, 0, 125)
    assert (record.req_mem, record.max_rss_bytes, record.alloc_cpus) == ("100M", 100 * K * K, 2)


def test_parse_sacct_ignores_a_column_it_does_not_know():
    columns = ("JobID", "Account", "State", "ExitCode", "QOS")
    (record,) = parse_sacct(sacct_rows(columns, ("3", "physics", "FAILED", "3:0", "normal")))
    assert (record.job_id, record.state, record.exit_code) == ("3", JobState.FAILED, 3)
    assert record.partition == "" and record.name == ""


def test_parse_sacct_missing_columns_get_their_defaults():
    (record,) = parse_sacct(sacct_rows(("JobID", "State"), ("3", "FAILED")))
    assert (record.job_id, record.job_id_raw, record.state, record.state_text) == ("3", "3", JobState.FAILED, "FAILED")
    assert (record.exit_code, record.signal, record.max_rss_bytes, record.alloc_cpus) == (0, 0, None, 0)
    assert (record.name, record.elapsed, record.time_limit, record.req_mem, record.nodes, record.user) == (
        "", "", "", "", "", "")
    assert not record.is_placeholder


def test_parse_sacct_without_a_job_id_column_has_no_records():
    assert parse_sacct(sacct_rows(("JobIDRaw", "State"), ("3", "FAILED"))) == []


def test_parse_sacct_headerless_capture_reads_nothing_as_a_job():
    """Rows without their header (an old `-n` capture or cache) must not be mistaken for jobs."""
    assert parse_sacct(capture("sacct_completed.txt")) == []


def test_parse_sacct_oom_keeps_requested_memory():
    (record,) = parse_sacct(slurm_output("sacct_oom.txt"))
    assert record.req_mem == "100M"
    assert parse_size(record.req_mem) == 100 * K * K


def test_parse_sacct_array_tasks_keyed_by_task_with_raw_ids():
    records = parse_sacct(slurm_output("sacct_array.txt"))
    by_id = {r.job_id: r for r in records}
    assert [r.job_id for r in records] == ["7_0", "7_1", "7_2", "7_3", "7_4", "7_5"]
    assert {k: r.job_id_raw for k, r in by_id.items()} == {
        "7_0": "8", "7_1": "9", "7_2": "10", "7_3": "11", "7_4": "12",
        "7_5": "7",  # the last task keeps the array's own raw id
    }
    assert by_id["7_4"].state is JobState.FAILED
    assert (by_id["7_4"].exit_code, by_id["7_4"].signal) == (1, 0)
    assert all(r.state is JobState.COMPLETED for k, r in by_id.items() if k != "7_4")
    # each task gets the MaxRSS of its own .batch step
    assert by_id["7_3"].max_rss_bytes == 216 * K
    assert by_id["7_4"].max_rss_bytes == 220 * K
    assert by_id["7_5"].max_rss_bytes == 224 * K


def test_parse_sacct_single_array_task():
    (record,) = parse_sacct(slurm_output("sacct_array_task.txt"))
    assert (record.job_id, record.job_id_raw, record.state) == ("7_4", "12", JobState.FAILED)
    assert record.max_rss_bytes == 220 * K


def test_parse_sacct_het_job_never_started_has_no_real_nodes():
    records = {r.job_id: r for r in parse_sacct(slurm_output("sacct_het_deadline_cancelled.txt"))}
    assert sorted(records) == ["838+0", "838+1"]
    assert records["838+0"].nodes == "None assigned" and records["838+0"].real_nodes == ""
    assert records["838+1"].alloc_cpus == 1


@pytest.mark.parametrize("name", ["sacct_stub.txt", "sacct_running_stub.txt"])
def test_parse_sacct_placeholder_record(name):
    (record,) = parse_sacct(slurm_output(name))
    assert record.is_placeholder
    assert record.name == "allocation"
    assert record.req_mem == "16?"
    assert record.real_req_mem == ""  # the placeholder is not what the job asked for
    # the job row wins: the RUNNING .batch step must not override the job's own state
    assert record.state is JobState.PENDING


def test_parse_sacct_placeholder_detected_by_req_mem_alone():
    text = slurm_output("sacct_completed.txt").replace("^|^1G^|^", "^|^16?^|^")
    (record,) = parse_sacct(text)
    assert record.is_placeholder
    assert record.name == "probe-ok" and record.real_req_mem == ""


def test_parse_sacct_unknown_job_is_empty():
    assert capture("sacct_unknown_job.txt") == ""  # with -n: nothing at all
    assert len(slurm_output("sacct_unknown_job.txt").splitlines()) == 1  # without -n: the header alone
    assert parse_sacct(slurm_output("sacct_unknown_job.txt")) == []


def test_parse_sacct_max_rss_is_the_largest_step():
    header, job_row, batch_row = slurm_output("sacct_completed.txt").splitlines()
    extern_row = batch_row.replace("2.batch^|^2.batch^|^batch", "2.extern^|^2.extern^|^extern").replace(
        "^|^216K^|^", "^|^100K^|^")
    step0_row = batch_row.replace("2.batch^|^2.batch^|^batch", "2.0^|^2.0^|^python").replace(
        "^|^216K^|^", "^|^5000K^|^")
    text = "\n".join([header, job_row, batch_row, extern_row, step0_row]) + "\n"
    (record,) = parse_sacct(text)
    assert record.max_rss_bytes == 5000 * K


def test_parse_sacct_step_row_before_job_row():
    header, *rows = slurm_output("sacct_completed.txt").splitlines()
    (record,) = parse_sacct("\n".join([header, *reversed(rows)]))
    assert record.job_id == "2"
    assert record.max_rss_bytes == 216 * K


def test_parse_sacct_job_name_with_pipe_survives_the_delimiter():
    text = slurm_output("sacct_completed.txt").replace("^|^probe-ok^|^", "^|^a|b c^|^")
    (record,) = parse_sacct(text)
    assert record.name == "a|b c"
    assert record.state is JobState.COMPLETED
    assert record.user == "jobmon-probe"  # the columns after it did not shift


def test_parse_sacct_skips_junk_and_short_rows():
    text = (
        SACCT_HEADER
        + "sacct: error: something odd\n"
        "2|2|probe-ok|COMPLETED|0:0\n"  # plain '|' delimiter: not a row of this table
        "\n"
        + capture("sacct_failed.txt")
    )
    records = parse_sacct(text)
    assert [r.job_id for r in records] == ["3"]


def test_sacct_fields_match_fixture_columns():
    for name in ("sacct_completed.txt", "sacct_array.txt", "sacct_stub.txt"):  # captured before AllocCPUS
        for line in capture(name).splitlines():
            assert len(line.split("^|^")) == 15
    for line in capture("sacct_completed_alloccpus.txt").splitlines():
        assert len(line.split("^|^")) == 16
    [record] = parse_sacct(slurm_output("sacct_completed_alloccpus.txt"))
    assert record.alloc_cpus == 1 and record.max_rss_bytes == 400 * 1024


# --- parse_submit_lines (sacct -X -P --delimiter='^|^' --format=JobID,SubmitLine) -------

def test_parse_submit_lines_real_output():
    lines = dict(parse_submit_lines(submit_lines_output()))
    assert len(lines) == 73
    assert lines["54"].split()[-2] == "--comment=jobmon-chain:53:2"
    assert lines["31_0"] == lines["31_1"]  # array tasks share their array's submit line
    assert lines["7"].startswith("sbatch --parsable --wrap echo done")  # sacct drops the shell quoting


def test_parse_submit_lines_keeps_a_pipe_inside_the_submit_line():
    text = sacct_rows(("JobID", "SubmitLine"), ("9", "sbatch --wrap cat x | sort --comment=jobmon-chain:8:2"))
    assert parse_submit_lines(text) == [("9", "sbatch --wrap cat x | sort --comment=jobmon-chain:8:2")]


# --- parse_exit_code / parse_size -------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("0:0", (0, 0)),
        ("3:0", (3, 0)),
        ("1:0", (1, 0)),
        ("0:125", (0, 125)),
        ("0:15", (0, 15)),
        ("0:9", (0, 9)),
        (" 2:9 \n", (2, 9)),
        ("7", (7, 0)),
        ("", (0, 0)),
        ("junk", (0, 0)),
        ("a:b", (0, 0)),
    ],
)
def test_parse_exit_code(text, expected):
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize(
    "text, default_unit, expected",
    [
        ("58180K", "", 58180 * K),
        ("220K", "", 220 * K),
        ("4k", "", 4 * K),
        ("0", "", 0),
        ("512", "", 512),
        ("100M", "", 100 * K ** 2),
        ("1G", "", K ** 3),
        ("1Gn", "", K ** 3),
        ("1.5G", "", int(1.5 * K ** 3)),
        ("2T", "", 2 * K ** 4),
        ("100", "M", 100 * K ** 2),
        ("100K", "M", 100 * K),
        ("", "", None),
        ("abc", "", None),
        ("K", "", None),
    ],
)
def test_parse_size(text, default_unit, expected):
    assert parse_size(text, default_unit) == expected


# --- scontrol show job ------------------------------------------------------------------

def test_parse_scontrol_show_job_running():
    info = parse_scontrol_show_job(capture("scontrol_show_job_running.txt"))
    assert info is not None
    assert info.job_id == "2"
    assert info.name == "probe-ok"
    assert info.state is JobState.RUNNING
    assert info.stdout == "/tmp/jobmon-fixtures/ok-2.out"
    assert info.stderr == "/tmp/jobmon-fixtures/ok-2.out"
    assert info.work_dir == "/tmp/jobmon-fixtures"
    assert info.command == "(null)"  # a --wrap job: callers treat "(null)" as "no script"
    assert (info.array_job_id, info.array_task_id) == ("", "")


def test_parse_scontrol_show_job_pending_held():
    text = capture("scontrol_show_job_pending.txt")
    info = parse_scontrol_show_job(text)
    assert info is not None
    assert (info.job_id, info.state) == ("6", JobState.PENDING)
    assert info.stdout == "/tmp/jobmon-fixtures/h-6.out"
    fields = parse_scontrol_fields(text)
    assert (fields["Reason"], fields["UserId"], fields["TimeLimit"]) == ("JobHeldUser", "root(0)", "UNLIMITED")
    assert fields["NodeList"] == ""  # "NodeList= NumNodes=1": an empty value, not the next field
    assert fields["NumNodes"] == "1"


def test_parse_scontrol_show_job_array_task():
    info = parse_scontrol_show_job(capture("scontrol_show_job_array_task.txt"))
    assert info is not None
    assert (info.job_id, info.array_job_id, info.array_task_id) == ("9", "7", "1")
    assert info.stdout == "/tmp/jobmon-fixtures/arr-7_1.out"


def test_parse_scontrol_show_job_array_reads_first_record():
    text = capture("scontrol_show_job_array.txt")
    info = parse_scontrol_show_job(text)
    assert info is not None
    assert (info.job_id, info.array_job_id, info.array_task_id) == ("7", "7", "3-5%3")
    assert parse_scontrol_fields(text)["Reason"] == "JobArrayTaskLimit"


def test_parse_scontrol_fields_keys_with_colons_and_slashes():
    fields = parse_scontrol_fields(capture("scontrol_show_job_running.txt"))
    assert fields["AllocNode:Sid"] == "localhost:7507"
    assert fields["CPUs/Task"] == "1"
    assert fields["ReqB:S:C:T"] == "0:0:*:*"
    assert fields["NtasksPerN:B:S:C"] == "0:0:*:*"
    assert fields["Socks/Node"] == "*"
    # '=' inside a value does not start a new key
    assert fields["TRES"] == "cpu=1,mem=1G,node=1,billing=1"
    assert "mem" not in fields and "cpu" not in fields
    assert fields["Power"] == ""
    assert fields["UserId"] == "jobmon-probe(1001)"


def test_parse_scontrol_show_job_paths_with_spaces():
    text = (
        capture("scontrol_show_job_running.txt")
        .replace("Restarts=0", "Restarts=2")
        .replace("UserId=jobmon-probe(1001)", "UserId=alice(1002)")
        .replace("Command=(null)", "Command=/home/alice/my jobs/train.sh")
        .replace("WorkDir=/tmp/jobmon-fixtures", "WorkDir=/home/alice/my jobs")
        .replace("StdErr=/tmp/jobmon-fixtures/ok-2.out", "StdErr=/home/alice/my jobs/e 2.err")
    )
    info = parse_scontrol_show_job(text)
    assert info is not None
    assert info.command == "/home/alice/my jobs/train.sh"
    assert info.work_dir == "/home/alice/my jobs"
    assert info.stderr == "/home/alice/my jobs/e 2.err"
    assert info.stdout == "/tmp/jobmon-fixtures/ok-2.out"
    fields = parse_scontrol_fields(text)
    assert (fields["Restarts"], fields["UserId"]) == ("2", "alice(1002)")


@pytest.mark.parametrize(
    "text",
    ["", "\n", capture("scontrol_invalid_job.stderr"), capture("scontrol_controller_down.stderr")],
)
def test_parse_scontrol_show_job_without_a_job(text):
    assert parse_scontrol_show_job(text) is None


# --- sbatch --parsable output (read by Slurm.submit) ------------------------------------

@pytest.mark.parametrize(
    "stdout, expected",
    [
        (capture("sbatch_parsable.txt"), ("2", None)),
        (capture("sbatch_parsable_array.txt"), ("7", None)),
        (capture("sbatch_parsable_failed.txt"), ("3", None)),
        (capture("sbatch_parsable_oom.txt"), ("4", None)),
        ("12;cluster\n", ("12", "cluster")),
        ("sbatch: warning: can't honor --ntasks-per-node set to 2\n12\n", ("12", None)),
        ("sbatch: warning: one\nsbatch: warning: two\n\n12;gpu-cluster\n\n", ("12", "gpu-cluster")),
        ("Submitted batch job 4242\n", ("4242", None)),
    ],
)
def test_submit_reads_parsable_output(stdout, expected):
    runner = FakeRunner(0, stdout, "")
    submission = Slurm(runner).submit(["--wrap", "true"])
    assert (submission.job_id, submission.cluster) == expected


@pytest.mark.parametrize("stdout", ["", "\n\n", "garbage\n", "sbatch: warning: no id here\n", "12abc\n"])
def test_submit_unreadable_output_is_slurm_error(stdout):
    with pytest.raises(SlurmError):
        Slurm(FakeRunner(0, stdout, "")).submit(["--wrap", "true"])


# --- Slurm: squeue ----------------------------------------------------------------------

def test_query_queue_argv_and_rows():
    runner = FakeRunner(0, slurm_output("squeue_array_running.txt"))
    entries = Slurm(runner, timeout=7.5).query_queue(["7", "13"])
    assert runner.argv == ["squeue", "-t", "all", "-j", "7,13", "-o", "%i|%T|%r|%M|%l|%L|%S|%N|%V|%P|%j"]
    assert "-h" not in runner.argv and "--noheader" not in runner.argv, "the parser needs the header line"
    assert runner.calls[0][1] == 7.5
    assert list(entries) == ["7_[3-5%3]", "7_2", "7_1", "7_0"]
    assert entries["7_2"].state is JobState.RUNNING


def test_query_user_queue_argv_and_rows():
    runner = FakeRunner(0, slurm_output("squeue_array_running_r.txt"))
    entries = Slurm(runner).query_user_queue()
    assert runner.argv == ["squeue", "-u", current_user(), "-r", "-t", "all", "-o", "%i|%T|%r|%M|%l|%L|%S|%N|%V|%P|%j"]
    assert sorted(entries) == ["7_0", "7_1", "7_2", "7_3", "7_4", "7_5"]


def test_query_user_queue_failure_raises_instead_of_an_empty_queue():
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        Slurm(FakeRunner(1, "", capture("squeue_controller_down.stderr"))).query_user_queue()


BANNER_FIRST = "Welcome to the cluster!\nJOBID|STATE|REASON|TIME\n7|RUNNING|None|1:00\n"


@pytest.mark.parametrize("stdout", ["", "\n", BANNER_FIRST])
def test_output_without_its_header_is_an_outage_never_an_empty_queue(stdout):
    """Real squeue and sacct print their header even with no rows (checked on the local Slurm), so
    anything else (a site's banner, an empty answer) must not read as "every job has left"."""
    with pytest.raises(SlurmUnavailable, match="no header line naming JobID"):
        Slurm(FakeRunner(0, stdout, "")).query_user_queue()
    with pytest.raises(SlurmUnavailable, match="no header line naming JobID"):
        Slurm(FakeRunner(0, stdout, "")).query_queue(["7"])
    with pytest.raises(SlurmUnavailable, match="no header line naming JobID"):
        Slurm(FakeRunner(0, stdout, "")).query_accounting(["7"])


def test_query_queue_invalid_job_id_means_no_rows():
    runner = FakeRunner(1, "", capture("squeue_invalid_job.stderr"))
    assert Slurm(runner).query_queue(["67"]) == {}


@pytest.mark.parametrize(
    "stderr",
    [capture("squeue_controller_down.stderr"), "", "\n", "squeue: error: Socket timed out on send/recv operation\n"],
)
def test_query_queue_controller_unreachable(stderr):
    with pytest.raises(SlurmUnavailable):
        Slurm(FakeRunner(1, "", stderr)).query_queue(["2"])


def test_query_queue_controller_down_message_quotes_squeue():
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        Slurm(FakeRunner(1, "", capture("squeue_controller_down.stderr"))).query_queue(["2"])


def test_query_queue_other_failure_is_not_unavailable():
    with pytest.raises(SlurmError, match="Invalid user") as caught:
        Slurm(FakeRunner(1, "", "squeue: error: Invalid user: nobody2\n")).query_queue(["2"])
    assert not isinstance(caught.value, SlurmUnavailable)


# --- Slurm: sacct -----------------------------------------------------------------------

def test_query_accounting_argv_and_records():
    runner = FakeRunner(0, slurm_output("sacct_array.txt"))
    records = Slurm(runner).query_accounting(["7", "3"])
    argv = runner.argv
    assert argv[0] == "sacct"
    assert "--delimiter=^|^" in argv
    assert "-P" in argv
    assert "-n" not in argv and "--noheader" not in argv, "the parser needs the header line"
    assert "-X" not in argv and "--allocations" not in argv, "MaxRSS lives on the step rows"
    assert f"--format={','.join(SACCT_FIELDS)}" in argv
    assert argv[argv.index("-j") + 1] == "7,3"
    assert sorted(records) == ["7_0", "7_1", "7_2", "7_3", "7_4", "7_5"]
    assert records["7_5"].job_id_raw == "7"


def test_accounting_text_is_sacct_stdout_with_its_header():
    text = slurm_output("sacct_completed.txt")
    assert Slurm(FakeRunner(0, text)).accounting_text(["2"]) == text


def test_query_accounting_unknown_job_is_empty():
    assert Slurm(FakeRunner(0, slurm_output("sacct_unknown_job.txt"))).query_accounting(["99999999"]) == {}


def test_query_accounting_dbd_down():
    runner = FakeRunner(1, "", capture("sacct_dbd_down.stderr"))
    with pytest.raises(SlurmUnavailable, match="database"):
        Slurm(runner).query_accounting(["2"])


# --- Slurm: scontrol --------------------------------------------------------------------

def test_show_job_argv_and_info():
    runner = FakeRunner(0, capture("scontrol_show_job_running.txt"))
    info = Slurm(runner).show_job("2")
    assert runner.argv == ["scontrol", "show", "job", "-o", "2"]
    assert info is not None and info.job_id == "2"


def test_show_jobs_lists_every_record():
    jobs = Slurm(FakeRunner(0, capture("scontrol_show_job_array.txt"))).show_jobs("7")
    assert [(job.job_id, job.array_job_id, job.array_task_id) for job in jobs] == [
        ("7", "7", "3-5%3"), ("10", "7", "2"), ("9", "7", "1"), ("8", "7", "0")]
    assert jobs[1].stdout == "/tmp/jobmon-fixtures/arr-7_2.out"


def test_show_job_invalid_id_is_none():
    assert Slurm(FakeRunner(1, "", capture("scontrol_invalid_job.stderr"))).show_job("67") is None


def test_show_job_controller_down():
    with pytest.raises(SlurmUnavailable):
        Slurm(FakeRunner(1, "", capture("scontrol_controller_down.stderr"))).show_job("2")


# --- Slurm: sbatch ----------------------------------------------------------------------

def test_submit_passes_flags_through_in_order_and_adds_parsable():
    args = ["--mem=1G", "-p", "debug", "--job-name", "a b", "--wrap", "echo 'x  y' | tr x z", "--", "-x"]
    runner = FakeRunner(0, "2\n")
    Slurm(runner).submit(args)
    argv = runner.argv
    assert argv[0] == "sbatch"
    assert argv.count("--parsable") == 1
    assert [a for a in argv[1:] if a != "--parsable"] == args


def test_submit_does_not_duplicate_parsable():
    args = ["--wrap", "true", "--parsable", "-p", "debug"]
    runner = FakeRunner(0, "2\n")
    Slurm(runner).submit(args)
    assert runner.argv.count("--parsable") == 1
    assert [a for a in runner.argv[1:] if a != "--parsable"] == ["--wrap", "true", "-p", "debug"]


@pytest.mark.parametrize(
    "returncode, name",
    [(1, "sbatch_error.stderr"), (1, "sbatch_bad_partition.stderr"), (2, "sbatch_error.stderr")],
)
def test_submit_rejected_carries_exit_code_and_stderr(returncode, name):
    stderr = capture(name)
    with pytest.raises(SbatchRejected) as caught:
        Slurm(FakeRunner(returncode, "", stderr)).submit(["--mem=lots", "--wrap", "true"])
    assert caught.value.exit_code == returncode
    assert str(caught.value) == stderr.strip()
    assert isinstance(caught.value, SlurmError)


def test_submit_rejected_without_stderr_names_the_exit_code():
    with pytest.raises(SbatchRejected, match="code 3") as caught:
        Slurm(FakeRunner(3, "", "")).submit(["--wrap", "true"])
    assert caught.value.exit_code == 3


# --- run_command ------------------------------------------------------------------------

def test_run_command_missing_binary_names_it():
    name = "jobmon-test-no-such-binary-5d1f"
    with pytest.raises(SlurmError, match=name):
        run_command([name, "-h"], 5)


def test_run_command_captures_output_and_code():
    result = run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 30)
    assert result == CommandResult(3, "out\n", "err\n")


def test_run_command_decodes_invalid_utf8_leniently():
    result = run_command(["sh", "-c", r"printf 'a\377b'"], 30)
    assert result.returncode == 0
    assert result.stdout == "a\ufffdb"


def test_run_command_timeout_is_unavailable():
    with pytest.raises(SlurmUnavailable, match="sleep"):
        run_command(["sleep", "30"], 0.2)


# --- Slurm: find_by_comment -------------------------------------------------------------

class AnswersByCommand:
    """A runner answering per command name (squeue, sacct); records every argv."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout):
        self.calls.append(list(argv))
        return self.answers[argv[0]]


COMMENTS_HEADER = header_line("squeue_ik.txt")  # JOBID|COMMENT
# SubmitLine as the local Slurm 22.05 stored it (sacct keeps no Comment unless AccountingStoreFlags says so)
SUBMIT_LINES = sacct_rows(
    ("JobID", "SubmitLine"),
    ("843", "sbatch --parsable --mem=100M --comment=jobmon-chain:84:2 /w/mixed.sbatch"),
    ("844_0", "sbatch --parsable --mem=500M --array=0,1 --chdir=/w/ --comment=jobmon-chain:840:2 /w/mixed.sbatch"),
    ("844_1", "sbatch --parsable --mem=500M --array=0,1 --chdir=/w/ --comment=jobmon-chain:840:2 /w/mixed.sbatch"),
)


def test_find_by_comment_falls_back_to_sacct_once_squeue_forgot_the_job():
    runner = AnswersByCommand({"squeue": CommandResult(0, COMMENTS_HEADER + "900|other\n", ""),
                               "sacct": CommandResult(0, SUBMIT_LINES, "")})
    slurm = Slurm(runner=runner)
    assert slurm.find_by_comment("jobmon-chain:840:2", since=1_800_000_000.0) == "844"
    assert slurm.find_by_comment("jobmon-chain:84:2", since=1_800_000_000.0) == "843"
    assert slurm.find_by_comment("jobmon-chain:840:3", since=1_800_000_000.0) is None
    squeue, sacct = runner.calls[:2]
    assert squeue == ["squeue", "-u", current_user(), "-t", "all", "-o", "%i|%k"]
    assert sacct[:2] == ["sacct", "-u"] and "--format=JobID,SubmitLine" in sacct
    assert "-X" in sacct and "-P" in sacct and "--delimiter=^|^" in sacct
    assert "-n" not in sacct and "--noheader" not in sacct
    assert sacct[sacct.index("-S") + 1] == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_800_000_000 - 3600))


@pytest.mark.parametrize("comment, found", [
    ("jobmon-chain:53:2", "54"),
    ("jobmon-chain:27:2", "31"),  # an array: its tasks' ids lead to the array's
    ("jobmon-chain:33:2", "34"),  # submitted through /usr/bin/sbatch
    ("jobmon-chain:53:3", None),
    ("jobmon-chain:5", None),  # a prefix of a real tag is not that tag
])
def test_find_by_comment_in_the_real_submit_lines(comment, found):
    runner = AnswersByCommand({"squeue": CommandResult(0, read_text(HEADERS, "squeue_ik.txt"), ""),
                               "sacct": CommandResult(0, submit_lines_output(), "")})
    assert Slurm(runner=runner).find_by_comment(comment, since=0.0) == found


def test_find_by_comment_prefers_squeue_and_raises_when_sacct_fails():
    listed = CommandResult(0, COMMENTS_HEADER + "845_[0-1]|jobmon-chain:840:2\n", "")
    found = Slurm(runner=AnswersByCommand({"squeue": listed}))
    assert found.find_by_comment("jobmon-chain:840:2", since=0.0) == "845"
    probe = Slurm(runner=AnswersByCommand({"squeue": CommandResult(0, read_text(HEADERS, "squeue_ik.txt"), "")}))
    assert probe.find_by_comment("fixture-probe", since=0.0) == "75"
    sacct_down = CommandResult(1, "", "sacct: error: Problem talking to the database")
    down = Slurm(runner=AnswersByCommand({"squeue": CommandResult(0, COMMENTS_HEADER, ""), "sacct": sacct_down}))
    with pytest.raises(SlurmUnavailable, match="sacct failed: sacct: error: Problem talking"):
        down.find_by_comment("jobmon-chain:840:2", since=0.0)


def test_find_by_comment_matches_a_comment_containing_a_pipe_whole():
    runner = AnswersByCommand({"squeue": CommandResult(0, COMMENTS_HEADER + "846|tag|x\n847|tag\n", ""),
                               "sacct": CommandResult(0, sacct_rows(("JobID", "SubmitLine")), "")})
    slurm = Slurm(runner=runner)
    assert slurm.find_by_comment("tag|x", since=0.0) == "846"
    assert slurm.find_by_comment("tag", since=0.0) == "847"
    assert slurm.find_by_comment("x", since=0.0) is None


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
def test_parse_timestamp_reads_local_time_as_datetime_would(zone, monkeypatch):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for text in ("2026-11-29T00:19:50", "2026-07-01T12:00:00", "2026-03-29T03:30:00", "1999-12-31T23:59:59"):
            assert parse_timestamp(text) == datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp(), text
        for junk in ("Unknown", "None", "", "2026-13-01T00:00:00", "2026-11-29T24:00:00", "2026-11-29 00:19:50",
                     "2026-11-29T00:19:50x"):
            assert parse_timestamp(junk) is None, junk
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
