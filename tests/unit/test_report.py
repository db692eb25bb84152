"""core.monitor.messages: channel and colour choice, message fields, secret masking, excerpt windows."""
from __future__ import annotations

import pytest

from core.monitor.messages import build_message, channel_for, choose_excerpt, colour_for, redact_secrets
from core.state.store import FinalRecord, JobRecord


def final(state: str, exit_code: int = 0, signal: int = 0, **extra) -> FinalRecord:
    return FinalRecord(state=state, state_text=extra.pop("state_text", state), exit_code=exit_code, signal=signal,
                       **extra)


def fields_of(message) -> dict:
    names = [f.name for f in message.fields]
    assert len(names) == len(set(names)), f"duplicate field names: {names}"
    return {f.name: f.value for f in message.fields}


# --- channel / colour -------------------------------------------------------------------

@pytest.mark.parametrize(
    "record, channel, colour",
    [
        (final("COMPLETED", 0, 0), "success", "success"),
        (final("COMPLETED", 1, 0), "error", "failure"),
        (final("COMPLETED", 0, 9), "error", "failure"),
        (final("FAILED", 3, 0), "error", "failure"),
        (final("FAILED", 0, 9), "error", "failure"),
        (final("OUT_OF_MEMORY", 0, 125), "error", "failure"),
        (final("NODE_FAIL", 1, 0), "error", "failure"),
        (final("TIMEOUT", 0, 0), "error", "warning"),
        (final("CANCELLED", 0, 0, state_text="CANCELLED by 0"), "error", "warning"),
        (final("CANCELLED", 0, 15), "error", "warning"),
        (final("PENDING", reason="DependencyNeverSatisfied"), "error", "failure"),
        (final(""), "error", "failure"),
    ],
)
def test_channel_and_colour(record, channel, colour):
    assert channel_for(record) == channel
    assert colour_for(record) == colour


# --- build_message ----------------------------------------------------------------------

FINDINGS = [
    {"category": "cuda_oom", "severity": "critical", "line_no": 40, "line": "CUDA out of memory",
     "hint": "Reduce batch size"},
    {"category": "python_traceback", "severity": "error", "line_no": 12, "line": "Traceback",
     "hint": "Read the traceback"},
    {"category": "cuda_oom", "severity": "critical", "line_no": 44, "line": "CUDA out of memory again",
     "hint": "Reduce batch size"},
    {"category": "python_traceback", "severity": "error", "line_no": 50, "line": "Traceback",
     "hint": "Read the traceback"},
]


def failed_record(**overrides) -> JobRecord:
    values = dict(
        job_id="4242",
        name="train",
        submit_dir="/home/alice/proj",
        stdout_path="/home/alice/proj/train-4242.out",
        stderr_path="/home/alice/proj/train-4242.err",
        final=FinalRecord(state="OUT_OF_MEMORY", state_text="OUT_OF_MEMORY", exit_code=0, signal=125,
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
    assert message.color == "failure"
    assert "OUT_OF_MEMORY" in fields["State"] and "OutOfMemory" in fields["State"]
    assert fields["Exit code"] == "0:125"  # 125 is not a signal: shown raw
    assert "00:10:00" in fields["Elapsed"] and "01:00:00" in fields["Elapsed"]
    assert "56.8 MiB" in fields["Peak memory"] and "1G" in fields["Peak memory"]
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
    assert "not sampled" in fields["Peak memory"]
    assert fields["Node(s)"] == "none"
    assert fields["Working dir"] == "/home/alice/proj"  # falls back to the submit folder
    assert "Findings" not in fields and "Log" not in fields
    assert "No known error pattern" in message.description


def test_success_message():
    record = failed_record(final=final("COMPLETED", 0, 0, elapsed="00:00:04"), findings=[], categories=[],
                           excerpt="")
    message = build_message(record)
    assert message.color == "success"
    assert "COMPLETED" in message.title
    assert "No known error pattern" not in message.description
    assert "never confirmed" not in message.description


@pytest.mark.parametrize(
    "record",
    [
        failed_record(final=FinalRecord(state="FAILED", exit_code=1, source="squeue", incomplete=True)),
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
    record = failed_record(final=FinalRecord(state="PENDING", state_text="PENDING", reason="DependencyNeverSatisfied",
                                             source="squeue"),
                           findings=[], categories=[], excerpt="")
    message = build_message(record)
    assert "NEVER STARTS" in message.title
    assert "DependencyNeverSatisfied" in message.title
    assert "scancel" in message.description
    assert "DependencyNeverSatisfied" in fields_of(message)["State"]
    assert message.color == "failure"


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
    from core.monitor.messages import build_message
    from core.state.store import FinalRecord, JobRecord

    record = JobRecord("5", final=FinalRecord(state="CANCELLED", time_limit="Partition_Limit", elapsed="00:00:00"))
    fields = {f.name: f.value for f in build_message(record).fields}
    assert fields["Elapsed"] == "00:00:00"
