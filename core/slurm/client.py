"""The one place jobmon runs Slurm commands; answers come back as frozen dataclasses (core.slurm.model).

Facts measured on a real Slurm 22.05 (see tests/fixtures/slurm): `squeue -j ID` needs `-t all` to
show a finished-but-not-purged job; exit 1 with "Invalid job id specified" means the controller
forgot the job, exit 1 with "Unable to contact slurm controller" means retry later.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

from core.errors import SbatchRejected, SlurmError, SlurmUnavailable
from core.slurm.model import AccountingRecord, CommandResult, JobInfo, QueueEntry, Submission, base_job_id
from core.slurm.parse import (
    GPU_QUERY,
    REQUEST_FIELDS,
    SACCT_DELIMITER,
    SACCT_FIELDS,
    SSTAT_FIELDS,
    error_line,
    is_invalid_job_error,
    is_unavailable_error,
    parse_comments,
    parse_sacct,
    parse_scontrol_show_jobs,
    parse_squeue,
    parse_submit_lines,
    squeue_format,
)

DEFAULT_TIMEOUT = 60.0
#: sacct is searched from this long before a chain's decision (clocks of login node and controller differ).
COMMENT_LOOKBACK = 3600.0

Runner = Callable[[Sequence[str], float], CommandResult]


def current_user() -> str:
    """The name of our uid, for `squeue -u` (portable to Slurm releases older than `--me`).

    From the password database, not $USER: Slurm owns jobs by uid, and $USER survives `su -p`.
    """
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run a Slurm command without a shell; a missing binary is a clear SlurmError."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, errors="replace",
            timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )
    except FileNotFoundError:
        raise SlurmError(
            f"'{argv[0]}' is not on PATH: load your cluster's Slurm module or add Slurm's bin folder to PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _with_header(command: str, text: str) -> str:
    """Output whose first line is the header naming JobID; anything else (a site's banner, a changed
    format) is an outage, never "no jobs": an empty answer would read as every job having left."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "JOBID" not in first.upper():
        raise SlurmUnavailable(f"{command} printed no header line naming JobID (first line: {first[:80]!r})")
    return text


def _failure(command: str, result: CommandResult) -> SlurmError:
    """An outage (retry later) or a plain error, named after the command and its own last line."""
    text = f"{command} failed: {error_line(result.stderr) or 'no output'}"
    if is_unavailable_error(result.stderr) or not result.stderr.strip():
        return SlurmUnavailable(text)
    return SlurmError(text)


class Slurm:
    """Runs Slurm's client commands through an injectable runner."""

    def __init__(self, runner: Runner = run_command, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._runner = runner
        self._timeout = timeout

    def _run(self, argv: Sequence[str]) -> CommandResult:
        return self._runner(argv, self._timeout)

    def submit(self, sbatch_args: Sequence[str]) -> Submission:
        """Run `sbatch --parsable ARGS`; raise SbatchRejected with sbatch's own words on failure."""
        from core.slurm.jobscript import parse_job_id  # here, not at the top: an idle daemon never submits

        args = list(sbatch_args)
        if "--parsable" not in args:
            args.insert(0, "--parsable")
        result = self._run(["sbatch", *args])
        if result.returncode != 0:
            raise SbatchRejected(result.returncode, result.stderr)
        job_id, cluster = parse_job_id(result.stdout)
        return Submission(job_id, cluster)

    def query_queue(self, job_ids: Sequence[str]) -> Dict[str, QueueEntry]:
        """Rows squeue knows for these ids (finished ones included). Forgotten ids are absent.

        Raises SlurmUnavailable when the controller cannot be reached: absence then proves nothing.
        """
        result = self._run(["squeue", "-t", "all", "-j", ",".join(job_ids), "-o", squeue_format()])
        if result.returncode != 0:
            if is_invalid_job_error(result.stderr):
                return {}
            raise _failure("squeue", result)
        return {entry.job_id: entry for entry in parse_squeue(_with_header("squeue", result.stdout))}

    def query_user_queue(self) -> Dict[str, QueueEntry]:
        """Every job of the calling user still known to the controller, array tasks one per row.

        One call serves all of a user's monitors (see core/slurm/shared.py); a job missing from
        it is gone from the controller, exactly like `Invalid job id` for a single-job query.
        """
        result = self._run(["squeue", "-u", current_user(), "-r", "-t", "all", "-o", squeue_format()])
        if result.returncode != 0:
            raise _failure("squeue", result)
        return {entry.job_id: entry for entry in parse_squeue(_with_header("squeue", result.stdout))}

    def accounting_text(self, job_ids: Sequence[str]) -> str:
        """Raw `sacct` output for these jobs, header included (kept as text so it can be shared through a file)."""
        result = self._run([
            "sacct", "-P", f"--delimiter={SACCT_DELIMITER}",
            f"--format={','.join(SACCT_FIELDS)}", "-j", ",".join(job_ids),
        ])
        if result.returncode != 0:
            raise SlurmUnavailable(f"sacct failed: {error_line(result.stderr) or 'no output'}")
        return _with_header("sacct", result.stdout)

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        """sacct records by job id (array tasks keyed by `A_T`). Missing ids mean "not recorded yet"."""
        return {record.job_id: record for record in parse_sacct(self.accounting_text(job_ids))}

    def usage_text(self, job_ids: Sequence[str]) -> str:
        """Raw `sstat -p -a` output for the running steps of these jobs (the `.batch` step and every `srun`
        step; without `-a` sstat shows one step only), header included. Slurm 22.05 takes several ids in
        one call; an id without steps (not started, ended) gets only a line on stderr, exit 0."""
        result = self._run(["sstat", "-p", "-a", f"--format={','.join(SSTAT_FIELDS)}", "-j", ",".join(job_ids)])
        if result.returncode != 0:
            raise _failure("sstat", result)
        return _with_header("sstat", result.stdout)

    def request_text(self, job_ids: Sequence[str]) -> str:
        """sacct's job rows (no steps) with what a job asked for: ReqMem, AllocCPUS, NNodes (header included)."""
        result = self._run(["sacct", "-X", "-P", f"--delimiter={SACCT_DELIMITER}",
                            f"--format={','.join(REQUEST_FIELDS)}", "-j", ",".join(job_ids)])
        if result.returncode != 0:
            raise SlurmUnavailable(f"sacct failed: {error_line(result.stderr) or 'no output'}")
        return _with_header("sacct", result.stdout)

    def gpu_text(self, job_id: str) -> str:
        """nvidia-smi's CSV from inside the job's allocation (`srun --overlap`: this creates a job step)."""
        result = self._run(["srun", "--overlap", "--jobid", job_id, "nvidia-smi", GPU_QUERY,
                            "--format=csv,noheader,nounits"])
        if result.returncode != 0:
            raise _failure("srun nvidia-smi", result)
        return result.stdout

    def find_by_comment(self, comment: str, since: float) -> Optional[str]:
        """The id of the user's job submitted with this --comment since `since` (epoch seconds).

        How a resubmission is found after a crash. squeue shows the comment while the controller
        remembers the job (MinJobAge); later only sacct's SubmitLine still has it (sacct stores no
        comment by default). Either query failing raises: guessing "not found" could submit twice.
        """
        result = self._run(["squeue", "-u", current_user(), "-t", "all", "-o", "%i|%k"])
        if result.returncode != 0:
            raise SlurmUnavailable(f"squeue failed: {error_line(result.stderr) or 'no output'}")
        for job_id, found in parse_comments(result.stdout):
            if found == comment:
                return base_job_id(job_id)
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(max(0.0, since - COMMENT_LOOKBACK)))
        result = self._run(["sacct", "-u", current_user(), "-X", "-P", f"--delimiter={SACCT_DELIMITER}",
                            "-S", start, "--format=JobID,SubmitLine"])
        if result.returncode != 0:
            raise SlurmUnavailable(f"sacct failed: {error_line(result.stderr) or 'no output'}")
        tag = f"--comment={comment}"
        for job_id, submit_line in parse_submit_lines(result.stdout):
            if tag in submit_line.split():
                return base_job_id(job_id)
        return None

    def version(self) -> str:
        """`squeue --version` (e.g. "slurm-wlm 22.05.8"); raises SlurmError when it does not answer."""
        result = self._run(["squeue", "--version"])
        if result.returncode != 0:
            raise _failure("squeue --version", result)
        return result.stdout.strip()

    def probe_accounting(self) -> CommandResult:
        """One small sacct query (the user's jobs of the last ten minutes), answered as it came: `jobmon
        doctor` tells "accounting disabled" from "slurmdbd unreachable" by its words (core/doctor/rules.py)."""
        return self._run(["sacct", "-X", "-n", "-P", "-u", current_user(), "-S", "now-600", "--format=JobID"])

    def cancel(self, job_id: str) -> None:
        """scancel a job (the user asked for it: `jobmon cancel --job`)."""
        result = self._run(["scancel", job_id])
        if result.returncode != 0:
            raise SlurmError(f"scancel {job_id} failed: {error_line(result.stderr) or 'no output'}")

    def show_jobs(self, job_id: str) -> List[JobInfo]:
        """scontrol's records of a job (one per array task record); empty once it is purged."""
        result = self._run(["scontrol", "show", "job", "-o", job_id])
        if result.returncode != 0:
            if is_invalid_job_error(result.stderr):
                return []
            raise SlurmUnavailable(f"scontrol failed: {error_line(result.stderr) or 'no output'}")
        return parse_scontrol_show_jobs(result.stdout)

    def show_job(self, job_id: str) -> Optional[JobInfo]:
        """scontrol's view of a job, or None once the controller has purged it."""
        jobs = self.show_jobs(job_id)
        return jobs[0] if jobs else None
