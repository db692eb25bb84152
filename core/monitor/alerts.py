"""What a monitor says while the job runs: started, progress, stalled, resumed, hung, time limit, and the
resource warnings (memory, idle CPUs or GPU, disk space, stale checkpoints). Pure.

Warnings (stalled, hang, time limit, resources) take the error route with the chain's or job's failures;
the optional start and progress messages take the success route. Each event's `notes` are what
the live checks remember having said for this run.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from core.monitor.poller import CANCEL_NOTE
from core.notify.events import Event, EventKind, Route
from core.notify.message import Facts, Field, Message, Tone
from core.progress.eta import Estimate, format_span
from core.progress.reading import Reading
from core.state.model import JobRecord

FOOTER = "jobmon"


def _who(record: JobRecord) -> str:
    name = f" ({record.name})" if record.name else ""
    attempt = f", attempt {record.target}" if record.target != record.job_id else ""
    return f"Job {record.job_id}{name}{attempt}"


def _facts(record: JobRecord, progress: str = "") -> Facts:
    """Live news is about a running job (route filters on `states` see RUNNING)."""
    return Facts(job_id=record.job_id, name=record.name, state="RUNNING", progress=progress)


def describe_progress(reading: Optional[Reading], eta: Optional[Estimate], now: float) -> str:
    """`45% (450/1000 it), epoch 3/10, ETA 1h12m (1h05m–1h30m)`, or what is known of it."""
    if reading is None:
        return "no progress seen in the logs"
    parts = []
    if reading.fraction is not None:
        parts.append(f"{reading.fraction * 100:.0f}%")
    count = f"{reading.done:g}/{reading.total:g}" if reading.total else f"{reading.done:g}"
    parts.append(f"{count} {reading.unit}".strip())
    if reading.epoch is not None:
        parts.append(f"epoch {reading.epoch}" + (f"/{reading.epochs}" if reading.epochs else ""))
    text = ", ".join(parts)
    if eta is not None:
        rough = "" if eta.confident else ", rough"
        text += (f"; ETA {format_span(eta.end_at - now)} "
                 f"({format_span(eta.low_at - now)}–{format_span(eta.high_at - now)}{rough})")
    return text


def start_event(record: JobRecord, nodes: str, waited: Optional[float]) -> Event:
    fields = [Field("Node", nodes or "unknown")]
    if waited is not None:
        fields.append(Field("Queue wait", format_span(waited)))
    message = Message(title=f"{_who(record)} started", tone=Tone.INFO, fields=tuple(fields), footer=FOOTER,
                      facts=_facts(record))
    return Event(EventKind.START, _next(record, EventKind.START), Route.SUCCESS, message, notes=("start",))


def progress_event(record: JobRecord, milestone: str, progress: str, note: str) -> Event:
    """`milestone`: what was passed ("25% done", "6h running")."""
    message = Message(title=f"{_who(record)}: {milestone}", description=progress, tone=Tone.INFO, footer=FOOTER,
                      facts=_facts(record, progress))
    return Event(EventKind.PROGRESS, _next(record, EventKind.PROGRESS), Route.SUCCESS, message, notes=(note,))


def stalled_event(record: JobRecord, idle: float, progress: str, lines: Sequence[str], cancel_after: Optional[float],
                  *, cancelled: bool = False) -> Event:
    if cancelled:
        what = f"no progress for {format_span(idle)}: jobmon cancelled it (health.cancel_on_stall)."
    else:
        what = f"No progress for {format_span(idle)}; it is still running."
        if cancel_after is not None:
            what += (f" jobmon cancels it if it is still stuck {format_span(cancel_after)} from now "
                     "(health.cancel_on_stall).")
    sequence = _next(record, EventKind.STALLED)
    message = Message(
        title=f"{_who(record)} stalled" + (" and was cancelled" if cancelled else ""),
        description=f"{what}\nLast progress: {progress}", tone=Tone.WARNING,
        excerpt="\n".join(lines[-8:]), footer=FOOTER, facts=_facts(record, progress),
    )
    return Event(EventKind.STALLED, sequence, Route.ERROR, message, notes=(f"stalled:{sequence}",))


def stall_cancel_event(record: JobRecord, idle: float, progress: str, lines: Sequence[str]) -> Event:
    """`health.cancel_on_stall`: the job stayed stuck past the second limit and jobmon scancels it."""
    message = Message(
        title=f"{_who(record)} stalled too long: cancelling it",
        description=(f"No progress for {format_span(idle)}: jobmon runs `scancel {record.target}` "
                     f"(health.cancel_on_stall).\nLast progress: {progress}"),
        tone=Tone.FAILURE, excerpt="\n".join(lines[-8:]), footer=FOOTER, facts=_facts(record, progress),
    )
    return Event(EventKind.STALLED, _next(record, EventKind.STALLED), Route.ERROR, message, notes=(CANCEL_NOTE,))


def resumed_event(record: JobRecord, sequence: int, stuck: float, progress: str) -> Event:
    message = Message(title=f"{_who(record)} resumed",
                      description=f"It moves again after {format_span(stuck)} without progress.\nNow: {progress}",
                      tone=Tone.INFO, footer=FOOTER, facts=_facts(record, progress))
    return Event(EventKind.RESUMED, sequence, Route.ERROR, message, notes=(f"resumed:{sequence}",))


def hang_event(record: JobRecord, category: str, hint: str, line: str, lines: Sequence[str]) -> Event:
    description = (f"`{category}` seen while the job is still running: it is probably hung and will use up its "
                   f"time limit without progress.\nHint: {hint}\nTo stop it: `jobmon cancel {record.job_id}` "
                   f"(or `scancel {record.target}`).")
    message = Message(title=f"{_who(record)} looks hung: {category}", description=description, tone=Tone.FAILURE,
                      fields=(Field("Line", line[:300], inline=False),), excerpt="\n".join(lines[-8:]),
                      footer=FOOTER, facts=_facts(record))
    return Event(EventKind.HANG, _next(record, EventKind.HANG), Route.ERROR, message, notes=("hang",))


def time_limit_event(record: JobRecord, headline: str, limit: float, left: float, progress: str,
                     notes: Tuple[str, ...]) -> Event:
    advice = (f"To give it more time: `scontrol update JobId={record.target} TimeLimit=<new limit>` where the "
              "site allows users to (usually only to lower it), or resubmit with a longer `-t`; "
              "`jobmon submit --escalate` doubles the limit after a TIMEOUT automatically.")
    message = Message(
        title=f"{_who(record)}: {headline}",
        description=f"Time left: {format_span(left)} of {format_span(limit)}.\nProgress: {progress}\n{advice}",
        tone=Tone.WARNING, footer=FOOTER, facts=_facts(record, progress),
    )
    return Event(EventKind.TIME_LIMIT, _next(record, EventKind.TIME_LIMIT), Route.ERROR, message, notes=notes)


def _warning(record: JobRecord, kind: EventKind, title: str, description: str, notes: Tuple[str, ...]) -> Event:
    message = Message(title=f"{_who(record)}: {title}", description=description, tone=Tone.WARNING, footer=FOOTER,
                      facts=_facts(record))
    return Event(kind, _next(record, kind), Route.ERROR, message, notes=notes)


def memory_event(record: JobRecord, used: int, requested: int, note: str) -> Event:
    """`approaching memory limit (92 % of 8G)`, with what to do about it."""
    from core.slurm.efficiency import format_size

    return _warning(
        record, EventKind.MEMORY, f"approaching memory limit ({100.0 * used / requested:.0f} % of "
        f"{format_size(requested)})",
        f"MaxRSS {format_size(used)} of the {format_size(requested)} requested: past the limit Slurm kills it "
        "(OUT_OF_MEMORY).\nNext time ask for more with `--mem` (or `--mem-per-cpu`), or submit with "
        "`jobmon submit --escalate`, which resubmits with more memory after an OUT_OF_MEMORY by itself.", (note,))


def cpu_low_event(record: JobRecord, fraction: float, cpus: int, elapsed: float, note: str) -> Event:
    return _warning(
        record, EventKind.CPU_LOW, f"using {fraction * 100:.0f} % of its {cpus} CPUs",
        f"Its CPU time over {format_span(elapsed)} is {fraction * 100:.0f} % of what {cpus} CPUs could do. If it "
        "cannot use more, ask for fewer (`-c`, `-n`): it would start sooner and leave them to others.", (note,))


def gpu_idle_event(record: JobRecord, idle_for: float, gpu_mem: Optional[int], note: str) -> Event:
    from core.slurm.efficiency import format_size

    memory = f" GPU memory in use: {format_size(gpu_mem)}." if gpu_mem else ""
    return _warning(
        record, EventKind.GPU_IDLE, f"GPU idle for {format_span(idle_for)}",
        f"GPU utilisation has been 0 % at every look for {format_span(idle_for)}.{memory} Check that the job "
        "really uses its GPU (CUDA visible, data loading not the bottleneck), or release it.", (note,))


def disk_event(record: JobRecord, path: str, free: int, total: int, critical: bool,
               notes: Tuple[str, ...]) -> Event:
    from core.slurm.efficiency import format_size

    share = 100.0 * free / total if total else 0.0
    headline = "disk almost full" if critical else "low disk space"
    return _warning(
        record, EventKind.DISK, f"{headline} on {path} ({format_size(free)} free, {share:.1f} %)",
        "The job writes here (its working directory or its logs). A full disk fails checkpoint and log writes: "
        "free space or move the output elsewhere.", notes)


def checkpoint_stale_event(record: JobRecord, globs: Sequence[str], count: int, newest: str, quiet_for: float,
                           note: str) -> Event:
    watched = ", ".join(f"`{g}`" for g in globs)
    seen = (f"{count} file(s) match; the newest, {newest}, was written {format_span(quiet_for)} ago."
            if newest else f"No file has matched in {format_span(quiet_for)}.")
    return _warning(record, EventKind.CHECKPOINT_STALE, f"no new checkpoint for {format_span(quiet_for)}",
                    f"Watching {watched}. {seen}", (note,))


def _next(record: JobRecord, kind: EventKind) -> int:
    """Live events are numbered per record: a chain's attempts each may warn again."""
    return 1 + sum(1 for entry in record.outbox if entry.kind is kind)
