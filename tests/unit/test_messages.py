"""core.monitor.messages (route and tone, the final message's fields, the escalation and first-failure
events) and core.analysis.logs' secret masking and excerpt windows."""
from __future__ import annotations

import dataclasses

import pytest

from core.analysis.finding import Finding
from core.analysis.logs import choose_excerpt, redact_secrets
from core.monitor.messages import (
    build_message,
    escalation_event,
    final_event,
    first_failure_event,
    route_for,
    tone_for,
)
from core.notify.events import EventKind, Route
from core.notify.message import Tone
from core.slurm.model import JobState
from core.state.model import Attempt, Chain, FinalRecord, FinalSource, JobRecord, Level, Round


def final(state: str, exit_code: int = 0, signal: int = 0, **extra) -> FinalRecord:
    return FinalRecord(state=JobState.parse(state), state_text=extra.pop("state_text", state), exit_code=exit_code,
                       signal=signal, **extra)


def fields_of(message) -> dict:
    names = [f.name for f in message.fields]
    assert len(names) == len(set(names)), f"duplicate field names: {names}"
    return {f.name: f.value for f in message.fields}


# --- channel / colour -------------------------------------------------------------------

@pytest.mark.parametrize(
    "record, route, tone",
    [
        (final("COMPLETED", 0, 0), Route.SUCCESS, Tone.SUCCESS),
        (final("COMPLETED", 1, 0), Route.ERROR, Tone.FAILURE),
        (final("COMPLETED", 0, 9), Route.ERROR, Tone.FAILURE),
        (final("FAILED", 3, 0), Route.ERROR, Tone.FAILURE),
        (final("FAILED", 0, 9), Route.ERROR, Tone.FAILURE),
        (final("OUT_OF_MEMORY", 0, 125), Route.ERROR, Tone.FAILURE),
        (final("NODE_FAIL", 1, 0), Route.ERROR, Tone.FAILURE),
        (final("TIMEOUT", 0, 0), Route.ERROR, Tone.WARNING),
        (final("CANCELLED", 0, 0, state_text="CANCELLED by 0"), Route.ERROR, Tone.WARNING),
        (final("CANCELLED", 0, 15), Route.ERROR, Tone.WARNING),
        (final("PENDING", reason="DependencyNeverSatisfied"), Route.ERROR, Tone.FAILURE),
        (final(""), Route.ERROR, Tone.FAILURE),
    ],
)
def test_route_and_tone(record, route, tone):
    assert route_for(record) is route
    assert tone_for(record) is tone


# --- build_message ----------------------------------------------------------------------

FINDINGS = [
    Finding("cuda_oom", "critical", 40, "CUDA out of memory", "Reduce batch size"),
    Finding("python_traceback", "error", 12, "Traceback", "Read the traceback"),
    Finding("cuda_oom", "critical", 44, "CUDA out of memory again", "Reduce batch size"),
    Finding("python_traceback", "error", 50, "Traceback", "Read the traceback"),
]


def failed_record(**overrides) -> JobRecord:
    values = dict(
        job_id="4242",
        name="train",
        submit_dir="/home/alice/proj",
        stdout_path="/home/alice/proj/train-4242.out",
        stderr_path="/home/alice/proj/train-4242.err",
        final=FinalRecord(state=JobState.OUT_OF_MEMORY, state_text="OUT_OF_MEMORY", exit_code=0, signal=125,
                          elapsed="00:10:00", time_limit="01:00:00", max_rss_bytes=58180 * 1024, req_mem="1G",
                          nodes="gpu-node07", partition="gpu", work_dir="/scratch/alice/run1",
                          reason="OutOfMemory"),
        categories=["cuda_oom", "python_traceback"],
        findings=list(FINDINGS),
        excerpt="Traceback ...\nCUDA out of memory",
    )
    values.update(overrides)
    return JobRecord(**values)


def test_build_message_fields():
    message = build_message(failed_record(), host="login1")
    fields = fields_of(message)
    assert "4242" in message.title and "train" in message.title and "OUT_OF_MEMORY" in message.title
    assert message.tone is Tone.FAILURE
    assert "OUT_OF_MEMORY" in fields["State"] and "OutOfMemory" in fields["State"]
    assert fields["Exit code"] == "0:125"  # 125 is not a signal: shown raw
    assert "00:10:00" in fields["Elapsed"] and "01:00:00" in fields["Elapsed"]
    assert fields["Peak memory"] == "56.8 MiB of 1G requested"
    assert fields["Node(s)"] == "gpu-node07"
    assert fields["Partition"] == "gpu"
    assert fields["Working dir"] == "/scratch/alice/run1"
    assert "/home/alice/proj/train-4242.err" in fields["Log"]
    assert "/home/alice/proj/train-4242.out" in fields["Log"]
    assert "Likely cause: cuda_oom" in message.description
    assert message.excerpt == "Traceback ...\nCUDA out of memory"
    assert "login1" in message.footer


def test_findings_list_each_category_once():
    findings = fields_of(build_message(failed_record()))["Findings"].splitlines()
    assert len(findings) == 2
    assert [line.split(":", 1)[0] for line in findings] == ["cuda_oom", "python_traceback"]
    assert "Reduce batch size" in findings[0]


def test_same_stdout_and_stderr_listed_once():
    same = "/home/alice/proj/slurm-4242.out"
    fields = fields_of(build_message(failed_record(stdout_path=same, stderr_path=same)))
    assert fields["Log"] == same


def test_exit_code_without_signal():
    record = failed_record(final=final("FAILED", 3, 0, reason="NonZeroExitCode"))
    assert fields_of(build_message(record))["Exit code"] == "3"


def test_unknown_memory_and_missing_details():
    record = failed_record(final=final("FAILED", 1), findings=[], categories=[], stdout_path="", stderr_path="")
    message = build_message(record)
    fields = fields_of(message)
    assert fields["Peak memory"] == "not recorded by Slurm"
    assert fields["Node(s)"] == "none"
    assert fields["Working dir"] == "/home/alice/proj"  # falls back to the submit folder
    assert "Findings" not in fields and "Log" not in fields
    assert "No known error pattern" in message.description


def test_peak_memory_slurm_did_not_record_is_said_plainly():
    """The demo's OOM job is killed before Slurm samples its memory: sacct has no MaxRSS."""
    record = failed_record(final=dataclasses.replace(failed_record().final, max_rss_bytes=0, req_mem="100M"))
    assert fields_of(build_message(record))["Peak memory"] == "not recorded by Slurm (100M requested)"


def test_success_message():
    record = failed_record(final=final("COMPLETED", 0, 0, elapsed="00:00:04"), findings=[], categories=[],
                           excerpt="")
    message = build_message(record)
    assert message.tone is Tone.SUCCESS
    assert "COMPLETED" in message.title
    assert "No known error pattern" not in message.description
    assert "never confirmed" not in message.description


@pytest.mark.parametrize(
    "record",
    [
        failed_record(final=FinalRecord(state=JobState.FAILED, exit_code=1, source=FinalSource.SQUEUE,
                                        incomplete=True)),
        failed_record(final=None),
    ],
    ids=["incomplete", "no-final"],
)
def test_incomplete_record_says_so(record):
    message = build_message(record)
    assert "never confirmed" in message.description
    assert "sacct" in message.description


def test_complete_record_does_not_claim_incomplete():
    assert "never confirmed" not in build_message(failed_record()).description


def test_pending_dependency_never_satisfied_never_starts():
    record = failed_record(final=FinalRecord(state=JobState.PENDING, state_text="PENDING",
                                             reason="DependencyNeverSatisfied", source=FinalSource.SQUEUE),
                           findings=[], categories=[], excerpt="")
    message = build_message(record)
    assert "NEVER STARTS" in message.title
    assert "DependencyNeverSatisfied" in message.title
    assert "scancel" in message.description
    assert "DependencyNeverSatisfied" in fields_of(message)["State"]
    assert message.tone is Tone.FAILURE


# --- redact_secrets ---------------------------------------------------------------------

SECRETS = [
    ("hf_" + "a1B2c3D4e5F6g7H8i9J0kLmN", "hf_"),
    ("ghp_" + "A" * 36, "gh"),
    ("gho_" + "0123456789abcdefghijKLMN", "gh"),
    ("sk-" + "proj-" + "x" * 40, "sk-"),
    ("sk-" + "Ab12" * 12, "sk-"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIA"),
    ("https://discord.com/api/webhooks/123456789012345678/abcDEF_ghi-JKL", "https://discord.com/api/webhooks/"),
    ("https://discordapp.com/api/webhooks/1/tokTOKtok", "https://discord.com/api/webhooks/"),
    ("https://ptb.discord.com/api/webhooks/1/tokTOKtok", "https://discord.com/api/webhooks/"),
]


@pytest.mark.parametrize("secret, kept_prefix", SECRETS)
def test_redact_token_shapes(secret, kept_prefix):
    text = f"before {secret} after"
    masked = redact_secrets(text)
    assert secret not in masked
    assert masked.startswith("before ") and masked.endswith(" after")
    assert kept_prefix in masked and "***" in masked


@pytest.mark.parametrize(
    "text, secret, kept",
    [
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def", "Authorization: Bearer"),
        ("curl -H 'authorization: bearer s3cr3tvalue'", "s3cr3tvalue", "authorization: bearer"),
        ("password=hunter2", "hunter2", "password="),
        ("DB PASSWORD: hunter2 (do not share)", "hunter2", "(do not share)"),
        ("passwd=letmein", "letmein", "passwd="),
        ("api_key=abcdef123456", "abcdef123456", "api_key="),
        ("token: abc.def", "abc.def", "token:"),
        ("secret = topsecretvalue", "topsecretvalue", "secret ="),
    ],
)
def test_redact_key_value_secrets(text, secret, kept):
    masked = redact_secrets(text)
    assert secret not in masked
    assert kept in masked


@pytest.mark.parametrize(
    "text",
    [
        "Traceback (most recent call last):",
        '  File "/home/alice/train.py", line 12, in <module>',
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "epoch 3 loss=0.3512 step=1200 lr=1e-4",
        "Using hf_hub_download for /home/alice/hf_cache/models",
        "ask-me-anything and risk-adjusted returns for task-1234567890123456789",
        "the token count is 512; password reset emails disabled",
        "AKIA is the prefix of AWS keys",
        "slurmstepd-vm: error: *** JOB 23 ON vm CANCELLED AT 2026-11-21T19:43:12 DUE TO TIME LIMIT ***",
        "https://discord.com/channels/123/456",
        "",
    ],
)
def test_ordinary_text_is_untouched(text):
    assert redact_secrets(text) == text


def test_redact_many_lines_keeps_structure():
    text = "line one\npassword=hunter2\nline three\nhf_" + "z" * 30 + "\n"
    masked = redact_secrets(text)
    assert masked.splitlines()[0] == "line one"
    assert masked.splitlines()[2] == "line three"
    assert masked.count("\n") == text.count("\n")
    assert "hunter2" not in masked and "z" * 30 not in masked


# --- choose_excerpt ---------------------------------------------------------------------

LINES = [f"l{i}" for i in range(100)]


@pytest.mark.parametrize(
    "lines, anchor, size, first, last",
    [
        (LINES, None, 25, 75, 99),  # no root cause: the tail
        (LINES, 50, 25, 29, 53),  # mostly before the anchor, three lines after
        (LINES, 2, 25, 0, 5),  # near the start: never before line 0
        (LINES, 99, 25, 75, 99),  # at the end: never past the last line
        (LINES, 97, 25, 75, 99),
        (LINES, 10, 5, 9, 13),
        (LINES[:10], None, 25, 0, 9),  # shorter than the window
        (LINES[:10], 4, 25, 0, 7),
    ],
)
def test_choose_excerpt_windows(lines, anchor, size, first, last):
    chosen = choose_excerpt(lines, anchor, size).split("\n")
    assert chosen == [f"l{i}" for i in range(first, last + 1)]
    assert len(chosen) <= size
    if anchor is not None:
        assert f"l{anchor}" in chosen


def test_choose_excerpt_of_nothing():
    assert choose_excerpt([], None) == ""
    assert choose_excerpt([], 3) == ""


def test_a_job_that_never_ran_has_no_partition_limit_text():
    record = JobRecord("5", final=FinalRecord(state=JobState.CANCELLED, time_limit="Partition_Limit",
                                              elapsed="00:00:00"))
    fields = {f.name: f.value for f in build_message(record).fields}
    assert fields["Elapsed"] == "00:00:00"


# --- events ------------------------------------------------------------------------------

def test_the_final_event_is_keyed_once_per_job_and_routed_by_its_end():
    event = final_event(failed_record(), host="login1")
    assert (event.kind, event.sequence, event.route) == (EventKind.FINAL, 1, Route.ERROR)
    assert event.key("4242") == "4242:final:1" and "login1" in event.message.footer
    clean = final_event(failed_record(final=final("COMPLETED"), findings=[], categories=[]))
    assert clean.route is Route.SUCCESS


def test_an_escalation_step_is_keyed_by_the_attempt_it_starts():
    chain = Chain(current_job="501", level=Level(mem="4G"), max_retries=3, attempts=[
        Attempt(job_id="500", resources=Level(mem="1G"), state=JobState.OUT_OF_MEMORY,
                decision="OUT_OF_MEMORY is set to escalate_mem"),
        Attempt(job_id="501", level_index=1, resources=Level(mem="4G"), round=2)], round=2)
    record = JobRecord("500", name="train", chain=chain)
    event = escalation_event(record, chain, chain.attempts[0])
    assert (event.kind, event.sequence, event.route) == (EventKind.ESCALATION, 2, Route.ERROR)
    assert event.message.title == "Job 500 (train) OUT_OF_MEMORY at 1G → resubmitted as 501 with 4G"
    assert event.message.description.startswith("Attempt 2 of at most 4.")


def test_an_array_round_is_keyed_by_the_round_that_ended():
    chain = Chain(round=2, max_retries=2, rounds=[Round(1, jobs=["70"], task_counts={"OUT_OF_MEMORY": 2},
                                                        retried_tasks="0-1", decision="task(s) 0-1 → 2G")],
                  attempts=[Attempt(job_id="70"),
                            Attempt(job_id="80", round=2, tasks="0-1", resources=Level(mem="2G"))])
    record = JobRecord("70", name="sweep", array_spec="0-1", chain=chain)
    event = escalation_event(record, chain, chain.attempts[0])
    assert (event.kind, event.sequence) == (EventKind.ROUND, 1)
    assert event.message.title == "Array 70 (sweep) round 1: 2 OUT_OF_MEMORY → resubmitted 0-1 as 80"
    assert "Task(s) 0-1 → job 80 with 2G" in event.message.description


def test_the_first_failure_warning_lists_at_most_ten_members():
    event = first_failure_event(JobRecord("9", name="sweep", array_spec="0-99"), [f"9_{i}" for i in range(12)])
    assert (event.kind, event.route) == (EventKind.FIRST_FAILURE, Route.ERROR)
    assert event.message.description.startswith("Failed so far: 9_0, 9_1") and "9_10" not in event.message.description
