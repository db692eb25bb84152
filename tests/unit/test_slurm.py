"""core.slurm.client: parsers fed the real Slurm 22.05 output in tests/fixtures/slurm, and the Slurm
class driven through an injected runner that replays that output and records each argv."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest

from core.errors import SlurmError, SlurmUnavailable
from core.slurm.client import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    CommandResult,
    JobState,
    QueueEntry,
    SbatchRejected,
    Slurm,
    parse_exit_code,
    parse_sacct,
    parse_scontrol_fields,
    parse_scontrol_show_job,
    parse_size,
    parse_squeue,
    run_command,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
K = 1024


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


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
    ],
)
def test_parse_squeue_fixtures(name, expected):
    entries = parse_squeue(fixture(name))
    assert [(e.job_id, e.state, e.reason) for e in entries] == expected


def test_parse_squeue_three_field_row_has_empty_time_used():
    assert parse_squeue("7_[3-5%3]|PENDING|JobArrayTaskLimit\n") == [
        QueueEntry("7_[3-5%3]", JobState.PENDING, "JobArrayTaskLimit", ""),
    ]


def test_parse_squeue_four_field_row_matches_squeue_format():
    # SQUEUE_FORMAT is what query_queue asks for: %i|%T|%r|%M.
    assert SQUEUE_FORMAT.count("|") == 3
    assert parse_squeue("13|RUNNING|None|1:02:03\n") == [QueueEntry("13", JobState.RUNNING, "None", "1:02:03")]


def test_parse_squeue_skips_junk_lines():
    text = (
        "\n"
        "   \n"
        "slurm_load_jobs error: Invalid job id specified\n"
        "2|RUNNING|None|0:01\n"
        "|RUNNING|None|0:01\n"  # no job id
        "garbage without any delimiter\n"
        "3|FAILED|NonZeroExitCode|0:00\n"
    )
    assert [e.job_id for e in parse_squeue(text)] == ["2", "3"]


def test_parse_squeue_strips_whitespace_and_parses_lower_case_state():
    assert parse_squeue("  42 | pending | Priority | 0:00  \r\n") == [
        QueueEntry("42", JobState.PENDING, "Priority", "0:00"),
    ]


def test_parse_squeue_empty_output():
    assert parse_squeue("") == []


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
    records = parse_sacct(fixture(name))
    assert len(records) == 1, "step rows (.batch) must not become records of their own"
    record = records[0]
    assert (record.job_id, record.job_id_raw) == (job_id, job_id)
    assert record.state is state
    assert record.state_text == state_text
    assert (record.exit_code, record.signal) == (exit_code, signal)
    assert record.max_rss_bytes == max_rss
    assert not record.is_placeholder


def test_parse_sacct_completed_all_columns():
    (record,) = parse_sacct(fixture("sacct_completed.txt"))
    assert record.name == "probe-ok"
    assert record.elapsed == "00:00:04"
    assert record.time_limit == "365-00:00:00"
    assert record.req_mem == "1G"
    assert record.nodes == "vm"
    assert record.partition == "debug"
    assert record.work_dir == "/tmp/jobmon-fixtures"
    assert record.start == "2026-11-21T20:06:30"
    assert record.end == "2026-11-21T20:06:34"
    assert record.user == "jobmon-probe"


def test_parse_sacct_oom_keeps_requested_memory():
    (record,) = parse_sacct(fixture("sacct_oom.txt"))
    assert record.req_mem == "100M"
    assert parse_size(record.req_mem) == 100 * K * K


def test_parse_sacct_array_tasks_keyed_by_task_with_raw_ids():
    records = parse_sacct(fixture("sacct_array.txt"))
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
    (record,) = parse_sacct(fixture("sacct_array_task.txt"))
    assert (record.job_id, record.job_id_raw, record.state) == ("7_4", "12", JobState.FAILED)
    assert record.max_rss_bytes == 220 * K


@pytest.mark.parametrize("name", ["sacct_stub.txt", "sacct_running_stub.txt"])
def test_parse_sacct_placeholder_record(name):
    (record,) = parse_sacct(fixture(name))
    assert record.is_placeholder
    assert record.name == "allocation"
    assert record.req_mem == "16?"
    # the job row wins: the RUNNING .batch step must not override the job's own state
    assert record.state is JobState.PENDING


def test_parse_sacct_placeholder_detected_by_req_mem_alone():
    text = fixture("sacct_completed.txt").replace("^|^1G^|^", "^|^16?^|^")
    (record,) = parse_sacct(text)
    assert record.is_placeholder


def test_parse_sacct_unknown_job_is_empty():
    assert fixture("sacct_unknown_job.txt") == ""
    assert parse_sacct(fixture("sacct_unknown_job.txt")) == []


def test_parse_sacct_max_rss_is_the_largest_step():
    job_row, batch_row = fixture("sacct_completed.txt").splitlines()
    extern_row = batch_row.replace("2.batch^|^2.batch^|^batch", "2.extern^|^2.extern^|^extern").replace(
        "^|^216K^|^", "^|^100K^|^")
    step0_row = batch_row.replace("2.batch^|^2.batch^|^batch", "2.0^|^2.0^|^python").replace(
        "^|^216K^|^", "^|^5000K^|^")
    text = "\n".join([job_row, batch_row, extern_row, step0_row]) + "\n"
    (record,) = parse_sacct(text)
    assert record.max_rss_bytes == 5000 * K


def test_parse_sacct_step_row_before_job_row():
    lines = fixture("sacct_completed.txt").splitlines()
    (record,) = parse_sacct("\n".join(reversed(lines)))
    assert record.job_id == "2"
    assert record.max_rss_bytes == 216 * K


def test_parse_sacct_job_name_with_pipe_survives_the_delimiter():
    text = fixture("sacct_completed.txt").replace("^|^probe-ok^|^", "^|^a|b c^|^")
    (record,) = parse_sacct(text)
    assert record.name == "a|b c"
    assert record.state is JobState.COMPLETED


def test_parse_sacct_skips_junk_and_short_rows():
    text = (
        "sacct: error: something odd\n"
        "2|2|probe-ok|COMPLETED|0:0\n"  # plain '|' delimiter: wrong field count
        "\n"
        + fixture("sacct_failed.txt")
    )
    records = parse_sacct(text)
    assert [r.job_id for r in records] == ["3"]


def test_sacct_fields_match_fixture_columns():
    for name in ("sacct_completed.txt", "sacct_array.txt", "sacct_stub.txt"):  # captured before AllocCPUS
        for line in fixture(name).splitlines():
            assert len(line.split("^|^")) == len(SACCT_FIELDS) - 1
    for line in fixture("sacct_completed_alloccpus.txt").splitlines():
        assert len(line.split("^|^")) == len(SACCT_FIELDS)
    [record] = parse_sacct(fixture("sacct_completed_alloccpus.txt"))
    assert record.alloc_cpus == 1 and record.max_rss_bytes == 400 * 1024


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
    info = parse_scontrol_show_job(fixture("scontrol_show_job_running.txt"))
    assert info is not None
    assert info.job_id == "2"
    assert info.name == "probe-ok"
    assert info.state is JobState.RUNNING
    assert info.reason == "None"
    assert info.user == "jobmon-probe"
    assert info.stdout == "/tmp/jobmon-fixtures/ok-2.out"
    assert info.stderr == "/tmp/jobmon-fixtures/ok-2.out"
    assert info.work_dir == "/tmp/jobmon-fixtures"
    assert info.command == "(null)"  # a --wrap job: callers treat "(null)" as "no script"
    assert info.partition == "debug"
    assert info.time_limit == "365-00:00:00"
    assert info.restarts == 0
    assert info.node_list == "vm"
    assert info.batch_host == "vm"
    assert (info.array_job_id, info.array_task_id) == ("", "")


def test_parse_scontrol_show_job_pending_held():
    info = parse_scontrol_show_job(fixture("scontrol_show_job_pending.txt"))
    assert info is not None
    assert (info.job_id, info.state, info.reason, info.user) == ("6", JobState.PENDING, "JobHeldUser", "root")
    assert info.node_list == ""  # "NodeList= NumNodes=1": an empty value, not the next field
    assert info.batch_host == ""
    assert info.time_limit == "UNLIMITED"
    assert info.stdout == "/tmp/jobmon-fixtures/h-6.out"


def test_parse_scontrol_show_job_array_task():
    info = parse_scontrol_show_job(fixture("scontrol_show_job_array_task.txt"))
    assert info is not None
    assert (info.job_id, info.array_job_id, info.array_task_id) == ("9", "7", "1")
    assert info.stdout == "/tmp/jobmon-fixtures/arr-7_1.out"


def test_parse_scontrol_show_job_array_reads_first_record():
    info = parse_scontrol_show_job(fixture("scontrol_show_job_array.txt"))
    assert info is not None
    assert (info.job_id, info.array_job_id, info.array_task_id) == ("7", "7", "3-5%3")
    assert info.reason == "JobArrayTaskLimit"


def test_parse_scontrol_fields_keys_with_colons_and_slashes():
    fields = parse_scontrol_fields(fixture("scontrol_show_job_running.txt"))
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


def test_parse_scontrol_show_job_restarts_user_and_paths_with_spaces():
    text = (
        fixture("scontrol_show_job_running.txt")
        .replace("Restarts=0", "Restarts=2")
        .replace("UserId=jobmon-probe(1001)", "UserId=alice(1002)")
        .replace("Command=(null)", "Command=/home/alice/my jobs/train.sh")
        .replace("WorkDir=/tmp/jobmon-fixtures", "WorkDir=/home/alice/my jobs")
        .replace("StdErr=/tmp/jobmon-fixtures/ok-2.out", "StdErr=/home/alice/my jobs/e 2.err")
    )
    info = parse_scontrol_show_job(text)
    assert info is not None
    assert info.restarts == 2
    assert info.user == "alice"
    assert info.command == "/home/alice/my jobs/train.sh"
    assert info.work_dir == "/home/alice/my jobs"
    assert info.stderr == "/home/alice/my jobs/e 2.err"
    assert info.stdout == "/tmp/jobmon-fixtures/ok-2.out"


@pytest.mark.parametrize(
    "text",
    ["", "\n", fixture("scontrol_invalid_job.stderr"), fixture("scontrol_controller_down.stderr")],
)
def test_parse_scontrol_show_job_without_a_job(text):
    assert parse_scontrol_show_job(text) is None


# --- sbatch --parsable output (read by Slurm.submit) ------------------------------------

@pytest.mark.parametrize(
    "stdout, expected",
    [
        (fixture("sbatch_parsable.txt"), ("2", None)),
        (fixture("sbatch_parsable_array.txt"), ("7", None)),
        (fixture("sbatch_parsable_failed.txt"), ("3", None)),
        (fixture("sbatch_parsable_oom.txt"), ("4", None)),
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
    assert submission.stdout == stdout


@pytest.mark.parametrize("stdout", ["", "\n\n", "garbage\n", "sbatch: warning: no id here\n", "12abc\n"])
def test_submit_unreadable_output_is_slurm_error(stdout):
    with pytest.raises(SlurmError):
        Slurm(FakeRunner(0, stdout, "")).submit(["--wrap", "true"])


# --- Slurm: squeue ----------------------------------------------------------------------

def test_query_queue_argv_and_rows():
    runner = FakeRunner(0, fixture("squeue_array_running.txt"))
    entries = Slurm(runner, timeout=7.5).query_queue(["7", "13"])
    assert runner.argv == ["squeue", "-h", "-t", "all", "-j", "7,13", "-o", SQUEUE_FORMAT]
    assert runner.calls[0][1] == 7.5
    argv = runner.argv
    assert argv[argv.index("-t") + 1] == "all"
    assert list(entries) == ["7_[3-5%3]", "7_2", "7_1", "7_0"]
    assert entries["7_2"].state is JobState.RUNNING


def test_query_queue_invalid_job_id_means_no_rows():
    runner = FakeRunner(1, "", fixture("squeue_invalid_job.stderr"))
    assert Slurm(runner).query_queue(["67"]) == {}


@pytest.mark.parametrize(
    "stderr",
    [fixture("squeue_controller_down.stderr"), "", "\n", "squeue: error: Socket timed out on send/recv operation\n"],
)
def test_query_queue_controller_unreachable(stderr):
    with pytest.raises(SlurmUnavailable):
        Slurm(FakeRunner(1, "", stderr)).query_queue(["2"])


def test_query_queue_controller_down_message_quotes_squeue():
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        Slurm(FakeRunner(1, "", fixture("squeue_controller_down.stderr"))).query_queue(["2"])


def test_query_queue_other_failure_is_not_unavailable():
    with pytest.raises(SlurmError, match="Invalid user") as caught:
        Slurm(FakeRunner(1, "", "squeue: error: Invalid user: nobody2\n")).query_queue(["2"])
    assert not isinstance(caught.value, SlurmUnavailable)


# --- Slurm: sacct -----------------------------------------------------------------------

def test_query_accounting_argv_and_records():
    runner = FakeRunner(0, fixture("sacct_array.txt"))
    records = Slurm(runner).query_accounting(["7", "3"])
    argv = runner.argv
    assert argv[0] == "sacct"
    assert "--delimiter=^|^" in argv
    assert "-P" in argv and "-n" in argv
    assert "-X" not in argv and "--allocations" not in argv, "MaxRSS lives on the step rows"
    assert f"--format={','.join(SACCT_FIELDS)}" in argv
    assert argv[argv.index("-j") + 1] == "7,3"
    assert sorted(records) == ["7_0", "7_1", "7_2", "7_3", "7_4", "7_5"]
    assert records["7_5"].job_id_raw == "7"


def test_query_accounting_unknown_job_is_empty():
    assert Slurm(FakeRunner(0, fixture("sacct_unknown_job.txt"))).query_accounting(["99999999"]) == {}


def test_query_accounting_dbd_down():
    runner = FakeRunner(1, "", fixture("sacct_dbd_down.stderr"))
    with pytest.raises(SlurmUnavailable, match="database"):
        Slurm(runner).query_accounting(["2"])


# --- Slurm: scontrol --------------------------------------------------------------------

def test_show_job_argv_and_info():
    runner = FakeRunner(0, fixture("scontrol_show_job_running.txt"))
    info = Slurm(runner).show_job("2")
    assert runner.argv == ["scontrol", "show", "job", "-o", "2"]
    assert info is not None and info.job_id == "2"


def test_show_job_invalid_id_is_none():
    assert Slurm(FakeRunner(1, "", fixture("scontrol_invalid_job.stderr"))).show_job("67") is None


def test_show_job_controller_down():
    with pytest.raises(SlurmUnavailable):
        Slurm(FakeRunner(1, "", fixture("scontrol_controller_down.stderr"))).show_job("2")


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
    stderr = fixture(name)
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


class AnswersByCommand:
    """A runner answering per command name (squeue, sacct); records every argv."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout):
        self.calls.append(list(argv))
        return self.answers[argv[0]]


# SubmitLine as the local Slurm 22.05 stored it (sacct keeps no Comment unless AccountingStoreFlags says so)
SUBMIT_LINES = (
    "843|sbatch --parsable --mem=100M --comment=jobmon-chain:84:2 /w/mixed.sbatch\n"
    "844_0|sbatch --parsable --mem=500M --array=0,1 --chdir=/w/ --comment=jobmon-chain:840:2 /w/mixed.sbatch\n"
    "844_1|sbatch --parsable --mem=500M --array=0,1 --chdir=/w/ --comment=jobmon-chain:840:2 /w/mixed.sbatch\n"
)


def test_find_by_comment_falls_back_to_sacct_once_squeue_forgot_the_job():
    runner = AnswersByCommand({"squeue": CommandResult(0, "900|other\n", ""),
                               "sacct": CommandResult(0, SUBMIT_LINES, "")})
    slurm = Slurm(runner=runner)
    assert slurm.find_by_comment("jobmon-chain:840:2", since=1_800_000_000.0) == "844"
    assert slurm.find_by_comment("jobmon-chain:84:2", since=1_800_000_000.0) == "843"
    assert slurm.find_by_comment("jobmon-chain:840:3", since=1_800_000_000.0) is None
    sacct = runner.calls[1]
    assert sacct[:2] == ["sacct", "-u"] and "--format=JobID,SubmitLine" in sacct
    assert sacct[sacct.index("-S") + 1] == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_800_000_000 - 3600))


def test_find_by_comment_prefers_squeue_and_raises_when_sacct_fails():
    found = Slurm(runner=AnswersByCommand({"squeue": CommandResult(0, "845_[0-1]|jobmon-chain:840:2\n", "")}))
    assert found.find_by_comment("jobmon-chain:840:2", since=0.0) == "845"
    sacct_down = CommandResult(1, "", "sacct: error: Problem talking to the database")
    down = Slurm(runner=AnswersByCommand({"squeue": CommandResult(0, "", ""), "sacct": sacct_down}))
    with pytest.raises(SlurmUnavailable, match="sacct failed: sacct: error: Problem talking"):
        down.find_by_comment("jobmon-chain:840:2", since=0.0)
