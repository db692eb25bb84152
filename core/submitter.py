"""Create a job's record: by submitting its script (`jobmon submit`) or attaching to it (`jobmon watch`)."""
from __future__ import annotations

import getpass
import os
import time
from typing import Optional, Sequence, Tuple

from core.errors import JobmonError, UnknownJob
from core.jobscript import (
    merge_options,
    parse_directives,
    parse_sbatch_options,
    resolve_log_paths,
    split_submit_args,
    validate_job_id,
)
from core.slurm import JobInfo, Slurm
from core.state import JobRecord, StateStore


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def read_script(path: str) -> str:
    """The script's text, with one clear line for each way a path can be wrong."""
    if not os.path.exists(path):
        raise JobmonError(f"script {path!r} not found; give the path of your sbatch script")
    if os.path.isdir(path):
        raise JobmonError(f"{path!r} is a directory, not an sbatch script")
    try:
        with open(path, "rb") as handle:
            return handle.read(1024 * 1024).decode("utf-8", errors="replace")
    except OSError as exc:
        raise JobmonError(f"cannot read script {path!r}: {exc.strerror or exc}") from None


def submit(store: StateStore, slurm: Slurm, argv: Sequence[str], *, cwd: str) -> JobRecord:
    """sbatch the script with its flags untouched, then write the job's record (not before success)."""
    sbatch_flags, script, script_args = split_submit_args(argv)
    text = read_script(script)
    options = merge_options(parse_sbatch_options(parse_directives(text)), parse_sbatch_options(sbatch_flags))
    submission = slurm.submit([*sbatch_flags, script, *script_args])
    user = current_user()
    record = JobRecord(
        job_id=submission.job_id,
        cluster=submission.cluster or "",
        name=options.job_name or os.path.basename(script),
        user=user,
        script=os.path.abspath(script),
        sbatch_args=list(sbatch_flags),
        script_args=list(script_args),
        submit_dir=cwd,
        created_at=time.time(),
        source="submit",
    )
    if not options.array:  # array tasks each have their own files: scontrol names them
        predicted = resolve_log_paths(
            options, submit_dir=cwd, job_id=submission.job_id, user=user,
            default_job_name=os.path.basename(script),
        )
        record.stdout_path, record.stderr_path = predicted.stdout, predicted.stderr
    _prefer_controller_paths(record, slurm)
    store.create(record)
    return record


def _prefer_controller_paths(record: JobRecord, slurm: Slurm) -> None:
    """scontrol's StdOut/StdErr are authoritative (patterns already expanded) while the job is known."""
    try:
        info = slurm.show_job(record.job_id)
    except JobmonError:
        return
    if info is not None:
        _apply_job_info(record, info)


def _apply_job_info(record: JobRecord, info: JobInfo) -> None:
    if info.stdout:
        record.stdout_path = info.stdout
    if info.stderr:
        record.stderr_path = info.stderr
    if info.name:
        record.name = info.name
    if info.work_dir and not record.submit_dir:
        record.submit_dir = info.work_dir


def attach(
    store: StateStore, slurm: Slurm, job_id_text: str, *, stdout: Optional[str], stderr: Optional[str],
) -> Tuple[JobRecord, bool]:
    """Create the record of a job submitted with plain sbatch; returns (record, already finished)."""
    job_id = validate_job_id(job_id_text)
    info = slurm.show_job(job_id)
    finished = info is None or info.state.is_final
    record = JobRecord(job_id=job_id, created_at=time.time(), source="watch", user=current_user())
    if info is not None:
        _apply_job_info(record, info)
        record.submit_dir = info.work_dir
        record.script = info.command if info.command not in ("(null)", "") else ""
    else:
        accounting = slurm.query_accounting([job_id])
        found = accounting.get(job_id)
        if found is None:
            raise UnknownJob(f"job {job_id} is unknown to Slurm (neither squeue nor sacct knows it); check the id")
        record.name = found.name
        record.submit_dir = found.work_dir
        default = os.path.join(found.work_dir or os.getcwd(), f"slurm-{job_id}.out")
        record.stdout_path = record.stderr_path = default
    if stdout:
        record.stdout_path = os.path.abspath(stdout)
        if not stderr and info is None:
            record.stderr_path = record.stdout_path
    if stderr:
        record.stderr_path = os.path.abspath(stderr)
    store.create(record)
    return record, finished
