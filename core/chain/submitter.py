"""Create a job's record: by submitting its script (`jobmon submit`) or attaching to it (`jobmon watch`)."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

from core.analysis.logs import job_options
from core.chain.policy import MEM_OPTIONS, Policy, apply_level, canonical_option, memory_option, without_options
from core.errors import JobmonError, RecordExists, UnknownJob
from core.slurm.arrays import compress_ids, parse_array_spec
from core.slurm.client import Slurm, current_user
from core.slurm.jobscript import (
    merge_options,
    parse_directives,
    parse_sbatch_options,
    resolve_log_paths,
    split_submit_args,
    validate_job_id,
)
from core.slurm.model import JobInfo
from core.state.model import Attempt, Chain, JobRecord, Level, LogOptions, RecordSource
from core.state.store import StateStore


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


@dataclass(frozen=True)
class SubmitOptions:
    """jobmon's own `submit` flags, which come first: `--escalate [--ladder FILE] [--max-retries N]`,
    `--watch-files GLOB` (repeatable)."""

    escalate: bool = False
    ladder_file: str = ""
    max_retries: Optional[int] = None
    watch_files: Tuple[str, ...] = ()


def split_jobmon_flags(argv: Sequence[str]) -> Tuple[SubmitOptions, List[str]]:
    """Take jobmon's leading flags off `jobmon submit`'s arguments; the rest belongs to sbatch."""
    args = list(argv)
    escalate, ladder, retries = False, "", None
    watch: List[str] = []
    while args:
        head = args[0]
        name, has_value, value = head.partition("=")
        if head == "--escalate":
            escalate = True
            args.pop(0)
            continue
        if name not in ("--ladder", "--max-retries", "--watch-files"):
            break
        args.pop(0)
        if not has_value:
            if not args:
                raise JobmonError(f"{name} needs a value")
            value = args.pop(0)
        if name == "--ladder":
            ladder = value
        elif name == "--watch-files":
            if not value.strip():
                raise JobmonError("--watch-files needs a file pattern like 'ckpt/*.pt'")
            watch.append(value)
        elif not value.isdecimal():
            raise JobmonError(f"--max-retries {value!r} is not a whole number")
        else:
            retries = int(value)
    if (ladder or retries is not None) and not escalate:
        raise JobmonError("--ladder and --max-retries only make sense with --escalate")
    return SubmitOptions(escalate, ladder, retries, tuple(watch)), args


def first_level(policy: Policy, option_args: Sequence[str]) -> Level:
    """Attempt 1 runs at the ladder's level 0, or at whatever the job asked for without a ladder."""
    if policy.ladder:
        return policy.ladder[0]
    values = {"mem": "", "time": ""}
    for index, arg in enumerate(option_args):
        name, has_value, value = arg.partition("=")
        name = canonical_option(name)
        if not has_value and index + 1 < len(option_args):
            value = option_args[index + 1]
        if name.startswith("-t") and len(name) > 2:  # -t30
            name, value = "-t", name[2:]
        if name in MEM_OPTIONS:
            values["mem"] = value
        elif name in ("-t", "--time"):
            values["time"] = value
    return Level(mem=values["mem"].upper(), time=values["time"])


def submit(
    store: StateStore, slurm: Slurm, argv: Sequence[str], *, cwd: str, policy: Optional[Policy] = None,
    watch_files: Sequence[str] = (),
) -> JobRecord:
    """sbatch the script with its flags untouched, then write the job's record (not before success).

    With an escalation `policy`, the job becomes the first attempt of a chain; a ladder's level 0
    resources override the script's own.
    """
    sbatch_flags, script, script_args = split_submit_args(argv)
    text = read_script(script)
    directives = parse_directives(text)
    options = merge_options(parse_sbatch_options(directives), parse_sbatch_options(sbatch_flags))
    chain = None
    submit_flags = list(sbatch_flags)
    if policy is not None:
        mem_option = memory_option([*directives, *sbatch_flags])
        level = first_level(policy, [*directives, *sbatch_flags])
        if policy.ladder:
            submit_flags = apply_level(sbatch_flags, level, mem_option)
        chain = Chain(ladder=list(policy.ladder), max_retries=policy.max_retries, mem_option=mem_option, level=level)
    submission = slurm.submit([*submit_flags, script, *script_args])
    if chain is not None:
        chain.current_job = submission.job_id
        chain.attempts.append(Attempt(job_id=submission.job_id, resources=chain.level))
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
        source=RecordSource.SUBMIT,
        chain=chain,
        log_options=LogOptions(output=options.output or "", error=options.error or "", chdir=options.chdir or ""),
        watch_files=list(watch_files),
    )
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
    create_or_adopt(store, record)
    return record


#: What a record found by `watch --all` keeps when `jobmon submit` adopts it: what its monitor has seen and done.
ADOPTION_KEEPS = frozenset({"monitor", "observation", "final", "tasks", "categories", "findings", "excerpt", "outbox",
                            "live", "created_at", "schema_version"})


def create_or_adopt(store: StateStore, record: JobRecord) -> bool:
    """Create the record of a job `jobmon submit` just submitted; True when `watch --all` had found the job first.

    The watcher and submit race for the same job: whoever creates the record first (under its lock) owns it.
    When the watcher won, submit's fuller record (script, arguments, escalation) replaces its own, keeping
    what its monitor has seen and sent; any other existing record is an error (RecordExists).
    """
    try:
        store.create(record)
        return False
    except RecordExists:
        pass

    def adopt(existing: JobRecord) -> None:
        if existing.source is not RecordSource.WATCH_ALL:
            raise RecordExists(f"job {record.job_id} is already monitored (state file {store.path(record.job_id)})")
        for item in dataclasses.fields(JobRecord):
            if item.name not in ADOPTION_KEEPS:
                setattr(existing, item.name, getattr(record, item.name))

    store.update(record.job_id, adopt)
    return True


def chain_comment(record: JobRecord, attempt: int) -> str:
    """A tag put on each resubmission (sbatch --comment) so it can be found again after a crash."""
    return f"jobmon-chain:{record.job_id}:{attempt}"


def resubmit(slurm: Slurm, record: JobRecord, level: Level, comment: str, tasks: str = "") -> Tuple[str, str, str]:
    """sbatch the same script and arguments at `level`; returns (job id, stdout path, stderr path).

    `tasks` (an --array spec) resubmits only those tasks of an array; their log paths are worked out
    per task at the end, so none are returned. Runs from the daemon (cwd /), so the job's working
    directory is given explicitly.
    """
    flags = apply_level(record.sbatch_args, level, record.chain.mem_option if record.chain else "--mem")
    if tasks:
        flags = [*without_options(flags, ["array"]), f"--array={tasks}"]
    if not any(arg == "-D" or arg.startswith(("--chdir", "-D")) for arg in flags):
        flags.append(f"--chdir={os.path.join(record.submit_dir, record.log_options.chdir)}")
    if not any(arg.startswith("--comment") for arg in flags):
        flags.append(f"--comment={comment}")
    submission = slurm.submit([*flags, record.script, *record.script_args])
    return (submission.job_id, *attempt_log_paths(slurm, record, submission.job_id, tasks))


def attempt_log_paths(slurm: Slurm, record: JobRecord, job_id: str, tasks: str = "") -> Tuple[str, str]:
    """(stdout, stderr) of a chain's new attempt; none for array tasks (each has its own, found at the end)."""
    if tasks:
        return "", ""
    options = job_options(record, array=None)
    paths = resolve_log_paths(options, submit_dir=record.submit_dir, job_id=job_id, user=record.user,
                              default_job_name=os.path.basename(record.script))
    probe = JobRecord(job_id=job_id, stdout_path=paths.stdout, stderr_path=paths.stderr)
    _prefer_controller_paths(probe, slurm)
    return probe.stdout_path, probe.stderr_path


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
    source: RecordSource = RecordSource.WATCH,
) -> Tuple[JobRecord, bool]:
    """Create the record of a job submitted with plain sbatch; returns (record, already finished).
    RecordExists when the job has one already (`store.create` is the claim every way in takes)."""
    job_id = validate_job_id(job_id_text)
    infos = slurm.show_jobs(job_id)
    info = infos[0] if infos else None
    finished = info is None or all(job.state.is_final for job in infos)
    record = JobRecord(job_id=job_id, created_at=time.time(), source=source, user=current_user())
    if info is not None:
        _apply_job_info(record, info)
        record.submit_dir = info.work_dir
        record.script = info.command if info.command not in ("(null)", "") else ""
        if info.array_job_id == job_id and info.array_task_id:
            _attach_array(record, infos)
    else:
        accounting = slurm.query_accounting([job_id])
        found = accounting.get(job_id)
        tasks = sorted(int(key[len(job_id) + 1:]) for key in accounting
                       if key.startswith(f"{job_id}_") and key[len(job_id) + 1:].isdecimal())
        if found is None and not tasks:
            raise UnknownJob(f"job {job_id} is unknown to Slurm (neither squeue nor sacct knows it); check the id")
        if found is None:  # an array the controller forgot: sacct keys its tasks 92_0, 92_1, ...
            found = accounting[f"{job_id}_{tasks[0]}"]
            record.expected_tasks = tasks
            record.array_spec = compress_ids(tasks)
            record.log_options = LogOptions(output=os.path.abspath(stdout) if stdout else "",
                                            error=os.path.abspath(stderr) if stderr else "")
        record.name = found.name
        record.submit_dir = found.work_dir
        if record.array_spec:  # no -o/-e known: sbatch's default, slurm-%A_%a.out in the working directory
            record.stdout_path = record.stderr_path = ""
        else:
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
    task_ids: Set[int] = set()
    for info in infos:
        try:
            task_ids.update(parse_array_spec(info.array_task_id).task_ids)
        except JobmonError:
            continue
    record.expected_tasks = sorted(task_ids)
    record.array_spec = compress_ids(record.expected_tasks)
    started = next((info for info in infos if info.array_task_id.isdecimal()), None)
    if started is not None:
        record.log_options = LogOptions(output=_task_path_pattern(started.stdout, started),
                                        error=_task_path_pattern(started.stderr, started))
    record.stdout_path = record.stderr_path = ""


def _task_path_pattern(path: str, task: JobInfo) -> str:
    """Turn one task's expanded log path back into a pattern (only its file name is rewritten)."""
    folder, name = os.path.split(path)
    name = name.replace(f"{task.array_job_id}_{task.array_task_id}", "%A_%a").replace(task.job_id, "%j")
    return os.path.join(folder, name)
