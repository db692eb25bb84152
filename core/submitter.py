"""Create a job's record: by submitting its script (`jobmon submit`) or attaching to it (`jobmon watch`)."""
from __future__ import annotations

import getpass
import os
import time
from typing import List, Optional, Sequence, Tuple

from core.errors import JobmonError, UnknownJob
from core.jobscript import (
    merge_options,
    parse_directives,
    parse_sbatch_options,
    resolve_log_paths,
    split_submit_args,
    validate_job_id,
)
from core.ranges import compress_ids, parse_array_spec
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
    record.log_options = {"output": options.output or "", "error": options.error or "", "chdir": options.chdir or ""}
    if options.array:
        record.array_spec = options.array
        record.expected_tasks = list(parse_array_spec(options.array).task_ids)
    else:  # array tasks each have their own files, resolved per task at the end
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
    infos = slurm.show_jobs(job_id)
    info = infos[0] if infos else None
    finished = info is None or all(job.state.is_final for job in infos)
    record = JobRecord(job_id=job_id, created_at=time.time(), source="watch", user=current_user())
    if info is not None:
        _apply_job_info(record, info)
        record.submit_dir = info.work_dir
        record.script = info.command if info.command not in ("(null)", "") else ""
        if info.array_job_id == job_id and info.array_task_id:
            _attach_array(record, infos)
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


def _attach_array(record: JobRecord, infos: List[JobInfo]) -> None:
    """An array seen through scontrol: its task ids, and its -o/-e patterns guessed from one task."""
    task_ids = set()
    for info in infos:
        try:
            task_ids.update(parse_array_spec(info.array_task_id).task_ids)
        except JobmonError:
            continue
    record.expected_tasks = sorted(task_ids)
    record.array_spec = compress_ids(record.expected_tasks)
    started = next((info for info in infos if info.array_task_id.isdigit()), None)
    if started is not None:
        record.log_options = {
            "output": _task_path_pattern(started.stdout, started), "error": _task_path_pattern(started.stderr, started),
            "chdir": "",
        }
    record.stdout_path = record.stderr_path = ""


def _task_path_pattern(path: str, task: JobInfo) -> str:
    """Turn one task's expanded log path back into a pattern (only its file name is rewritten)."""
    folder, name = os.path.split(path)
    name = name.replace(f"{task.array_job_id}_{task.array_task_id}", "%A_%a").replace(task.job_id, "%j")
    return os.path.join(folder, name)
