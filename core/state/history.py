"""The history: one summary line per job that left the live part of the state folder.

`status` and `recover` read only the live records (core.state.store's index); `history` reads these
summaries, a month per file (`history/2026-11.jsonl`, by the month the job was submitted, UTC), so
`history --since 30d` reads one or two files however long the folder has been used. The full record
stays in `state/<job>.json` for `report`.

Appends happen under `history.lock`; a line cut by a crash is skipped by readers and the next
append starts on a new line. A job summarised twice (a crash between writing its summary and
leaving the index) is read once: the last line wins.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from core.locking import file_lock
from core.slurm.efficiency import Efficiency, EfficiencySpread
from core.notify import outbox
from core.state.codec import DecodeError, decode, encode
from core.state.model import JobRecord

LOCK_TIMEOUT = 60.0
#: What a job id in a state file name looks like: `123`, or `123_4` for one array task.
JOB_ID_RE = re.compile(r"^\d+(?:_\d+)?$")


@dataclass
class HistoryEntry:
    """What `history` shows of a job, and which Slurm jobs (chain attempts) it covers."""

    job_id: str
    name: str = ""
    created_at: float = 0.0
    state: str = ""
    exit_code: Optional[int] = None
    elapsed: str = ""
    attempts: int = 1
    causes: List[str] = field(default_factory=list)
    jobs: List[str] = field(default_factory=list)  # every Slurm job id of the chain, the last one last
    cancelled: bool = False  # monitoring was stopped by the user
    notification: str = ""  # how its messages fared (core.notify.outbox.summary_status)
    efficiency: Optional[Efficiency] = None  # a job's (the chain's last attempt's), once it ended
    efficiency_spread: Optional[EfficiencySpread] = None  # an array's, across its tasks

    @property
    def last_job(self) -> str:
        """The Slurm job it ended with: the chain's last attempt, or the job itself."""
        return self.jobs[-1] if self.jobs else self.job_id


def summarize(record: JobRecord) -> HistoryEntry:
    """A record's history line: its outcome as `history` shows it (array counts for a group)."""
    final = record.final
    if final is None:
        state = record.observation.state.value if record.observation.state else "UNKNOWN"
    else:
        state = final.summary
    jobs = [a.job_id for a in record.chain.attempts] if record.chain is not None else []
    return HistoryEntry(
        job_id=record.job_id, name=record.name, created_at=record.created_at,
        state=state, exit_code=final.exit_code if final is not None else None,
        elapsed=final.elapsed if final is not None else "", attempts=max(1, len(jobs)),
        causes=list(record.categories), jobs=jobs or [record.job_id], cancelled=record.cancelled,
        notification=outbox.summary_status(record.outbox),
        efficiency=record.efficiency, efficiency_spread=record.efficiency_spread,
    )


def month_of(timestamp: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(max(0.0, timestamp)))


class History:
    """The summaries under `<state>/history/`."""

    def __init__(self, state_folder: str) -> None:
        self.folder = os.path.join(state_folder, "history")
        self.lock_path = os.path.join(state_folder, "history.lock")

    def append(self, entries: Iterable[HistoryEntry]) -> None:
        """Add summaries (one line each, in the file of the month each job was submitted)."""
        by_month: Dict[str, List[str]] = {}
        for entry in entries:
            by_month.setdefault(month_of(entry.created_at), []).append(json.dumps(encode(entry), sort_keys=True))
        if not by_month:
            return
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        with file_lock(self.lock_path, LOCK_TIMEOUT):
            for month, lines in sorted(by_month.items()):
                self._append_lines(os.path.join(self.folder, f"{month}.jsonl"), lines)

    @staticmethod
    def _append_lines(path: str, lines: List[str]) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            data = ("\n" if cut else "") + "\n".join(lines) + "\n"
            handle.write(data.encode("utf-8"))
            handle.flush()
            os.fsync(fd)

    def months(self) -> List[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(name[:-6] for name in names if name.endswith(".jsonl") and not name.startswith("."))

    def read(self, since: float = 0.0) -> Dict[str, HistoryEntry]:
        """Every summary of a job submitted at or after `since`, by job id (the last line of a job wins)."""
        first = month_of(since) if since > 0 else ""
        entries: Dict[str, HistoryEntry] = {}
        for month in self.months():
            if month < first:
                continue
            for entry in self._read_file(os.path.join(self.folder, f"{month}.jsonl")):
                if entry.created_at >= since:
                    entries[entry.job_id] = entry
        return entries

    def find(self, job_id: str) -> Optional[HistoryEntry]:
        """The summary of a job, or of the chain one of whose attempts has this id."""
        found = None
        for month in self.months():
            for entry in self._read_file(os.path.join(self.folder, f"{month}.jsonl")):
                if entry.job_id == job_id or job_id in entry.jobs:
                    found = entry
        return found

    @staticmethod
    def _read_file(path: str) -> Iterable[HistoryEntry]:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return
        for line in lines:
            try:
                entry = decode(HistoryEntry, json.loads(line))
            except (ValueError, DecodeError, RecursionError):
                continue  # a line cut by a crash
            if JOB_ID_RE.match(entry.job_id):
                yield entry

