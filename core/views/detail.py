"""One job's detail, as `jobmon show` prints it and `status --watch` shows it on Enter.

`load_detail` and `detail_of` read (the record, the ends of its logs, at most one squeue snapshot);
`render_detail` and the helpers it shares with the live view are pure: a JobDetail and a size in,
lines of text out, so they are tested without a terminal.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.analysis.lines import shown_text
from core.analysis.logtail import read_tail
from core.daemon.liveness import this_host
from core.errors import JobmonError
from core.monitor.live import current
from core.monitor.poller import SlurmView
from core.progress.eta import format_span
from core.progress.reading import Sample
from core.slurm.model import QueueEntry
from core.state.model import JobRecord
from core.state.store import StateStore
from core.views.history import find_record
from core.views.status import StatusRow, status_row

#: Log lines `show` prints per log unless told otherwise.
SHOW_LINES = 20
#: Bytes read from the end of each log: a tqdm line of thousands of frames still ends in the last one.
TAIL_BYTES = 1024 * 1024
#: Progress samples listed as `time  percent` lines, and findings and events listed, when space is short.
SHORT_LIST = 3
LONG_LIST = 8


@dataclass(frozen=True)
class Glyphs:
    """The characters drawn: Unicode blocks where the terminal speaks UTF-8, ASCII elsewhere."""

    full: str
    empty: str
    ellipsis: str
    spark: str  # lowest level first
    dash: str


UNICODE = Glyphs(full="#", empty="-", ellipsis="…", spark="▁▂▃▄▅▆▇█", dash="–")
ASCII = Glyphs(full="#", empty="-", ellipsis="~", spark="_.-=+*#", dash="-")


def glyphs_for(encoding: Optional[str]) -> Glyphs:
    return UNICODE if (encoding or "").lower().replace("-", "") == "utf8" else ASCII


@dataclass(frozen=True)
class LogTail:
    """The last lines of one log, `\\r` frames folded and escapes dropped; `missing` when it is not there."""

    path: str
    lines: Tuple[str, ...] = ()
    missing: bool = False


@dataclass(frozen=True)
class JobDetail:
    """What the detail shows of one job, read at `now`; `record` is None when it could not be read."""

    row: StatusRow
    record: Optional[JobRecord]
    logs: Tuple[LogTail, ...] = ()
    now: float = 0.0
    problem: str = ""


# -- reading -------------------------------------------------------------------------------------
def read_log(path: str, max_lines: int) -> LogTail:
    """The last `max_lines` non-empty lines of a log, each as the terminal showed it last."""
    if not os.path.exists(path):
        return LogTail(path, missing=True)
    tail = read_tail(path, max_lines, max_bytes=TAIL_BYTES)
    ended = _ends_with_newline(path)
    count = len(tail.lines)
    folded = (shown_text(line, terminated=ended or index < count - 1) for index, line in enumerate(tail.lines))
    lines = [text for text in folded if text.strip()]
    return LogTail(path, tuple(lines[-max_lines:]))


def _ends_with_newline(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True


def load_detail(store: StateStore, row: StatusRow, log_lines: int) -> JobDetail:
    """The detail of a row of `status`: its record and the ends of its logs (no Slurm call)."""
    now = time.time()
    try:
        record = store.load(row.job_id)
    except JobmonError as exc:
        return JobDetail(row, None, now=now, problem=str(exc))
    return JobDetail(row, record, tuple(read_log(path, log_lines) for path in record.log_paths), now)


def detail_of(store: StateStore, slurm: SlurmView, job_id: str, log_lines: int) -> Tuple[JobDetail, str]:
    """`jobmon show`: the job (or the chain one of whose attempts it is), its state from the shared queue
    snapshot while it runs; returns (detail, warning). Raises StateError for a job jobmon does not know."""
    record = find_record(store, job_id)
    now = time.time()
    queue: Dict[str, QueueEntry] = {}
    warning = ""
    if record.final is None:
        try:
            queue = slurm.query_queue([record.target])
        except JobmonError as exc:
            warning = f"squeue unavailable, showing the last known state ({exc})"
    row = status_row(record, queue, this_host(), now)
    return JobDetail(row, record, tuple(read_log(path, log_lines) for path in record.log_paths), now), warning


# -- pure helpers shared with the live view ------------------------------------------------------
def clip(text: str, width: int, glyphs: Glyphs = UNICODE) -> str:
    """`text` cut to `width` characters, the cut marked."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[:width - 1] + glyphs.ellipsis if width > 1 else text[:1]


def bar(fraction: Optional[float], width: int, glyphs: Glyphs = UNICODE) -> str:
    """`[#######-------]` filling `width` characters; blank when the fraction is unknown."""
    inner = width - 2
    if fraction is None or inner < 1:
        return " " * max(0, width)
    filled = int(round(min(1.0, max(0.0, fraction)) * inner))
    return "[" + glyphs.full * filled + glyphs.empty * (inner - filled) + "]"


def percent_cell(progress: Optional[Dict[str, Any]]) -> str:
    """`45%`, or `1200 it` without a total; `-` when nothing is known."""
    if progress is None:
        return "-"
    if progress.get("fraction") is not None:
        return f"{progress['fraction'] * 100:.0f}%"
    unit = progress.get("unit") or ""
    return f"{progress['done']:g} {unit}".strip() if progress.get("done") is not None else "-"


def eta_cell(progress: Optional[Dict[str, Any]]) -> str:
    """`1h12m`, with `?` when the estimate is rough; `-` without one."""
    if progress is None or progress.get("eta_seconds") is None:
        return "-"
    return format_span(progress["eta_seconds"]) + ("" if progress.get("eta_confident") else "?")


def sparkline(samples: Sequence[Sample], start: float, end: float, width: int, glyphs: Glyphs = UNICODE) -> str:
    """Progress over [start, end] in `width` equal slices of time (a flat stretch is a stall)."""
    if not samples or width < 1:
        return ""
    levels = glyphs.spark
    span = max(end - start, 1e-9)
    out = []
    index = 0
    fraction = 0.0
    for slot in range(width):
        at = start + span * (slot + 1) / width
        while index < len(samples) and samples[index].at <= at + 1e-9:
            fraction = samples[index].fraction
            index += 1
        level = int(round(min(1.0, max(0.0, fraction)) * (len(levels) - 1)))
        out.append(levels[level])
    return "".join(out)


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def ago(seconds: float) -> str:
    return f"{format_span(seconds)} ago"


# -- the detail ----------------------------------------------------------------------------------
def render_detail(detail: JobDetail, width: int, height: Optional[int] = None, glyphs: Glyphs = UNICODE) -> List[str]:
    """The detail as lines at most `width` wide; with `height`, at most that many lines (the logs get
    what the other sections leave), without, everything read."""
    short = height is not None and height < 30
    most = SHORT_LIST if short else LONG_LIST
    head = _summary(detail, width, glyphs)
    sections = [_history(detail, width, most, glyphs), _findings(detail, most, glyphs), _events(detail, most)]
    lines = head + [line for section in sections for line in section]
    room = None if height is None else height - len(lines)
    lines += _logs(detail, room, width, glyphs)
    if detail.row.problem:
        lines.append(f"problem: {detail.row.problem}")
    if detail.problem:
        lines.append(f"cannot read the record: {detail.problem}")
    lines = [clip(line, width, glyphs) for line in lines]
    return lines if height is None else lines[:max(0, height)]


def _summary(detail: JobDetail, width: int, glyphs: Glyphs) -> List[str]:
    row, record, now = detail.row, detail.record, detail.now
    job = row.job_id if row.current_job in ("", row.job_id) else f"{row.job_id} (now {row.current_job})"
    lines = [f"job {job}  {row.name or '-'}  {row.state or '-'}" + (f"  elapsed {row.elapsed}" if row.elapsed else "")]
    progress = row.progress
    if progress is not None:
        text = percent_cell(progress)
        if progress.get("total") is not None and progress.get("done") is not None:
            text += f"  {progress['done']:g}/{progress['total']:g} {progress.get('unit') or ''}".rstrip()
        if progress.get("epoch") is not None:
            text += f"  epoch {progress['epoch']}" + (f"/{progress['epochs']}" if progress.get("epochs") else "")
        source = progress.get("source")
        if source:
            text += f"  ({getattr(source, 'value', source)})"  # an enum in a row, a string once read back
        if progress.get("fraction") is not None:
            size = min(42, max(0, width - len(text) - 2))
            text = (bar(progress["fraction"], size, glyphs) + "  " if size >= 7 else "") + text
        lines.append(text)
        lines.append(_eta_line(progress, glyphs))
    else:
        lines.append("progress: no progress line understood" + (" yet" if record and record.final is None else ""))
    live = current(record) if record is not None else None
    if live is not None and live.started_at:
        moved = f", last advanced {ago(now - live.advanced_at)}" if live.advanced_at else ", no advance seen yet"
        lines.append(f"running since {clock(live.started_at)}{moved}")
    if row.flags:
        lines.append("health: " + "  ".join(row.flags))
    lines.extend(resource_lines(row.usage, row.files))
    last_poll = "-" if row.last_poll is None else ago(row.last_poll)
    lines.append(f"monitor {row.monitor or '-'}" + (f" on {row.host} (pid {row.pid})" if row.host else "")
                 + f", last poll {last_poll}, notification {row.notification or '-'}")
    return lines


def resource_lines(usage: Optional[Dict[str, Any]], files: Optional[Dict[str, Any]]) -> List[str]:
    """`usage: memory 343M of 400M (86 %), CPU 12 %, GPU 0 %` and `files: 5 (4.9K, +1K), newest ckpt/e5.pt 2m ago`
    from a status row's JSON (what is unknown is left out)."""
    from core.slurm.efficiency import format_size

    lines = []
    if usage is not None:
        parts = []
        if usage["max_rss_bytes"] is not None:
            asked = f" of {format_size(usage['req_mem_bytes'])}" if usage["req_mem_bytes"] else ""
            share = f" ({usage['memory_fraction'] * 100:.0f} %)" if usage["memory_fraction"] is not None else ""
            parts.append(f"memory {format_size(usage['max_rss_bytes'])}{asked}{share}")
        if usage["cpu_fraction"] is not None:
            parts.append(f"CPU {usage['cpu_fraction'] * 100:.0f} %")
        if usage["gpu_util_percent"] is not None:
            memory = f" ({format_size(usage['gpu_mem_bytes'])})" if usage["gpu_mem_bytes"] else ""
            parts.append(f"GPU {usage['gpu_util_percent']:.0f} %{memory}")
        if usage["error"]:
            parts.append(f"unknown now: {usage['error']}")
        if parts:
            lines.append("usage: " + ", ".join(parts))
    if files is not None:
        newest = (f", newest {os.path.basename(files['newest'])} {ago(files['newest_age_seconds'])}"
                  if files["newest"] and files["newest_age_seconds"] is not None else ", none yet")
        growth = f", +{format_size(files['growth_bytes'])}" if files["growth_bytes"] > 0 else ""
        lines.append(f"files: {files['count']} ({format_size(files['total_bytes'])}{growth}){newest}")
    return lines


def _eta_line(progress: Dict[str, Any], glyphs: Glyphs) -> str:
    if progress.get("eta_seconds") is None:
        return "ETA: -"
    text = f"ETA {format_span(progress['eta_seconds'])}"
    low, high = progress.get("eta_low_seconds"), progress.get("eta_high_seconds")
    if low is not None and high is not None:
        text += f" ({format_span(low)}{glyphs.dash}{format_span(high)})"
    return text + ("" if progress.get("eta_confident") else ", rough")


def _history(detail: JobDetail, width: int, most: int, glyphs: Glyphs) -> List[str]:
    live = current(detail.record) if detail.record is not None else None
    if live is None or not live.samples or live.reading is None or live.reading.fraction is None:
        return []  # a bar without a total: its samples are counts, not shares
    samples = live.samples
    running = detail.record is not None and detail.record.final is None
    start, end = samples[0].at, max(samples[-1].at, detail.now if running else samples[-1].at)
    label = f"progress history ({len(samples)} samples, {clock(start)} to {clock(end)})"
    spark = sparkline(samples, start, end, min(48, width - 4), glyphs)
    lines = [label, f"  {spark}"] if spark else [label]
    shown = samples[-most:]
    first = len(samples) - len(shown)
    for offset, sample in enumerate(shown):
        line = f"  {clock(sample.at)}  {sample.fraction * 100:5.1f}%"
        index = first + offset
        if index > 0:
            before = samples[index - 1]
            line += f"  +{(sample.fraction - before.fraction) * 100:.1f}% in {format_span(sample.at - before.at)}"
        lines.append(line)
    return lines


def _findings(detail: JobDetail, most: int, glyphs: Glyphs) -> List[str]:
    findings = detail.record.findings if detail.record is not None else []
    if not findings:
        return []
    lines = [f"findings ({len(findings)})"]
    for finding in findings[:most]:
        lines.append(f"  {finding.category}: {finding.line}" if finding.line else f"  {finding.category}")
    if len(findings) > most:
        lines.append(f"  {glyphs.ellipsis} and {len(findings) - most} more")
    return lines


def _events(detail: JobDetail, most: int) -> List[str]:
    if detail.record is not None and detail.record.outbox:
        entries = [(entry.created_at, entry.kind.value, entry.message.title if entry.message else entry.key,
                    {name: d.status.value for name, d in entry.deliveries.items()}) for entry in detail.record.outbox]
    else:
        entries = [(event.get("created_at") or 0.0, str(event.get("kind", "")), str(event.get("key", "")),
                    dict(event.get("deliveries") or {})) for event in detail.row.events]
    if not entries:
        return []
    lines = [f"events ({len(entries)})"]
    for at, kind, title, deliveries in entries[-most:]:
        sent = ", ".join(f"{name} {status}" for name, status in deliveries.items()) or "not routed yet"
        lines.append(f"  {clock(at) if at else '--:--:--'}  {kind}: {title}  [{sent}]")
    return lines


def _heading(path: str, suffix: str, width: int, glyphs: Glyphs) -> str:
    room = width - len(suffix)
    if len(path) > room > 1:
        path = glyphs.ellipsis + path[-(room - 1):]
    return path + suffix


def _logs(detail: JobDetail, room: Optional[int], width: int, glyphs: Glyphs) -> List[str]:
    """Each log's last lines under a heading (a long path loses its start, not its file name); with `room`,
    as many as fit, shared between the logs."""
    logs = list(detail.logs)
    if not logs:
        return [] if detail.record is None else ["logs: none known"]
    if room is not None and room < 2:
        return []
    present = [log for log in logs if log.lines]
    budget: Dict[str, Optional[int]] = {log.path: None for log in logs}
    if room is not None:
        left = max(0, room - len(logs))  # one heading per log
        share = left // len(present) if present else 0
        extra = left - share * len(present)
        for log in present:  # the last log (stdout after stderr) gets the odd line
            budget[log.path] = share + (extra if log is present[-1] else 0)
    lines: List[str] = []
    for log in logs:
        if log.missing:
            lines.append(_heading(log.path, ": not there (yet)", width, glyphs))
            continue
        if not log.lines:
            lines.append(_heading(log.path, ": empty", width, glyphs))
            continue
        count = budget[log.path]
        shown = list(log.lines) if count is None else (list(log.lines[-count:]) if count > 0 else [])
        lines.append(_heading(log.path, f" (last {len(shown)} lines)", width, glyphs))
        lines.extend(f"  {line}" for line in shown)
    return lines
