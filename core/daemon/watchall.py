"""`jobmon watch --all`: one per-user daemon that gives every new job of the user matching its filters a
monitor, whatever submitted it (plain sbatch, snakemake, submitit, ...).

It finds jobs in the shared squeue snapshot the monitors already keep (core/slurm/shared.py): no
scheduler call of its own to discover them. A job it picks costs what `jobmon watch ID` costs (one
`scontrol show job` for its log paths) and gets a monitor through the same claim every way in takes:
`store.create` under the job's lock, then `start_monitor`'s claim. So a job never gets two monitors, and
when `jobmon submit` comes second it adopts the watcher's record (core/chain/submitter.py create_or_adopt).
The watcher waits GRACE seconds after it first sees a job before attaching, so `jobmon submit` (and an
escalation chain writing its next attempt's id) normally gets there first.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from core.config import Paths
from core.daemon.liveness import Health, this_host
from core.daemon.process import child_env, module_argv
from core.daemon.service import (
    ServiceRecord,
    detach_service,
    load_service,
    save_service,
    service_health,
    stop_service,
    this_service,
)
from core.errors import JobmonError, RecordExists, StateError
from core.logs import log, log_to
from core.slurm.model import QueueEntry
from core.slurm.shared import QueueSnapshot
from core.state.store import StateStore

WATCH_FILE = "watch-all.json"
#: Seconds between a job's first sighting and the watcher attaching to it (`jobmon submit` goes first);
#: JOBMON_WATCH_GRACE overrides it (the race tests set 0).
GRACE = 5.0
#: At most this often the watcher looks at the snapshot (it still reads it no faster than the poll interval).
MIN_INTERVAL = 1.0


@dataclass(frozen=True)
class WatchFilter:
    """Which jobs the watcher takes: partitions (any), a regex searched in the name, submitted since when."""

    partitions: Tuple[str, ...] = ()
    name: str = ""
    since: float = 0.0  # epoch seconds; jobs submitted earlier are left alone

    def as_args(self) -> List[str]:
        args = ["--since-at", repr(self.since)]
        if self.partitions:
            args += ["--partition", ",".join(self.partitions)]
        if self.name:
            args += ["--name", self.name]
        return args

    def describe(self) -> str:
        parts = [f"submitted since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"]
        if self.partitions:
            parts.append(f"partition {','.join(self.partitions)}")
        if self.name:
            parts.append(f"name matching {self.name!r}")
        return ", ".join(parts)


def parse_filter_args(args: Sequence[str]) -> WatchFilter:
    """The inverse of WatchFilter.as_args (how the detached watcher and `recover` get their filters)."""
    values: Dict[str, str] = {}
    items = list(args)
    while items:
        key = items.pop(0)
        if key not in ("--since-at", "--partition", "--name") or not items:
            raise JobmonError(f"watch --all: bad argument {key!r}")
        values[key] = items.pop(0)
    return make_filter(values.get("--partition", ""), values.get("--name", ""),
                       float(values.get("--since-at", "0") or 0))


def make_filter(partitions: str, name: str, since: float) -> WatchFilter:
    if name:
        try:
            re.compile(name)
        except re.error as exc:
            raise JobmonError(f"--name {name!r} is not a valid regular expression: {exc}") from None
    wanted = tuple(p.strip() for p in partitions.split(",") if p.strip())
    return WatchFilter(partitions=wanted, name=name, since=since)


def base_job(job_id: str) -> str:
    """The job a squeue row belongs to: `123` for the array task `123_4`, the pending `123_[5-9]`, the het
    component `123+1`."""
    return re.split(r"[_+]", job_id, maxsplit=1)[0]


def submitted_at(text: str) -> Optional[float]:
    """squeue's SUBMIT_TIME (`2026-11-29T01:34:33`, local time) as epoch seconds; None when unreadable."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def matches(entry: QueueEntry, wanted: WatchFilter) -> bool:
    if wanted.partitions and not set(entry.partition.split(",")) & set(wanted.partitions):
        return False
    if wanted.name and not re.search(wanted.name, entry.name):
        return False
    at = submitted_at(entry.submit_time)
    return at is not None and at > wanted.since - 1  # squeue gives whole seconds: 01:40:35 is any time in it


def select_new(entries: Mapping[str, QueueEntry], wanted: WatchFilter, known: Set[str]) -> List[str]:
    """The jobs (arrays by their own id) of a snapshot that match and that nothing monitors yet, oldest first."""
    found: Dict[str, QueueEntry] = {}
    for job_id, entry in entries.items():
        base = base_job(job_id)
        if base not in known and base not in found and matches(entry, wanted):
            found[base] = entry
    return sorted(found, key=lambda job: (len(job), job))


def known_jobs(store: StateStore) -> Set[str]:
    """Every Slurm job a current record answers for: its own id, its chain's attempts and pending submissions."""
    known: Set[str] = set()
    for job_id, record, _ in store.load_current():
        known.add(job_id)
        if record is not None and record.chain is not None:
            known.update(attempt.job_id for attempt in record.chain.attempts)
            if record.chain.pending is not None:
                known.update(s.job_id for s in record.chain.pending.submissions if s.job_id)
    return known


@dataclass
class Watcher:
    """One look at the shared snapshot per step; attaches what is new (drivable in tests: no sleeping here)."""

    store: StateStore
    snapshot: Callable[[], QueueSnapshot]
    wanted: WatchFilter
    attach: Callable[[str], str]  # starts the job's monitor; returns what happened, for the log
    grace: float = GRACE
    first_seen: Dict[str, float] = field(default_factory=dict)
    handled: Set[str] = field(default_factory=set)

    def step(self, now: float) -> List[str]:
        snapshot = self.snapshot()
        if snapshot.error:
            return [f"squeue unavailable ({snapshot.error}); trying again"]
        lines = []
        for job_id in select_new(snapshot.entries, self.wanted, self.handled | known_jobs(self.store)):
            seen = self.first_seen.setdefault(job_id, now)
            if now - seen < self.grace:
                continue
            self.handled.add(job_id)
            try:
                lines.append(f"job {job_id}: {self.attach(job_id)}")
            except RecordExists:
                lines.append(f"job {job_id}: monitored already")
            except StateError as exc:  # AlreadyMonitored, a locked record: someone else has it
                lines.append(f"job {job_id}: {exc}")
            except JobmonError as exc:  # gone before we could look (scontrol and sacct know nothing yet)
                self.handled.discard(job_id)
                lines.append(f"job {job_id}: not attached yet ({exc}); trying again")
        seen_now = {base_job(job_id) for job_id in snapshot.entries}
        self.first_seen = {job: at for job, at in self.first_seen.items() if job in seen_now}
        return lines


# -- the service ----------------------------------------------------------------------------------
def watch_path(state_folder: str) -> str:
    return os.path.join(state_folder, WATCH_FILE)


def load_watcher(state_folder: str) -> Optional[ServiceRecord]:
    return load_service(watch_path(state_folder))


def watcher_health(record: ServiceRecord, now: float) -> Health:
    return service_health(record, this_host(), now)


def start_watcher(paths: Paths, wanted: WatchFilter) -> ServiceRecord:
    """Detach `python -m core.daemon.watchall` (like a monitor: survives logout) and wait until it runs."""
    running = load_watcher(paths.state)
    if running is not None and watcher_health(running, time.time()) is Health.ALIVE:
        raise JobmonError(f"jobmon watch --all already runs (pid {running.pid} on {running.host}); "
                          "`jobmon watch --all --stop` stops it")
    return detach_service(module_argv("core.daemon.watchall", *wanted.as_args()), watch_log(paths), child_env(paths),
                          lambda: load_watcher(paths.state), "the watcher")


def stop_watcher(paths: Paths) -> Optional[ServiceRecord]:
    """SIGTERM to the watcher of this JOBMON_HOME on this host; its record if one was stopped."""
    record = load_watcher(paths.state)
    if record is None or record.stopped_at or not stop_service(record):
        return None
    return record


def watch_log(paths: Paths) -> str:
    return os.path.join(paths.logs, "watch-all.log")


def main(argv: List[str]) -> int:
    """`python -m core.daemon.watchall --since-at T [--partition P,...] [--name REGEX]`: the detached watcher
    (its log: logs/watch-all.log)."""
    from core.chain.submitter import attach
    from core.config import load_config, resolve_paths
    from core.daemon.launcher import start_monitor
    from core.slurm.client import Slurm
    from core.slurm.shared import SharedSlurm
    from core.state.model import RecordSource

    log_to(sys.stderr, f"watch-all pid={os.getpid()}")
    paths = resolve_paths()
    try:
        wanted = parse_filter_args(argv)
        config = load_config(paths, require_webhook=False)
    except JobmonError as exc:
        log.error("%s", exc)
        return 1
    store = StateStore(paths.state)
    slurm = Slurm()
    shared = SharedSlurm(slurm, paths.state, max_age=config.running_interval)
    path = watch_path(paths.state)
    record = this_service(time.time(), args=wanted.as_args())
    save_service(path, record)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def attach_one(job_id: str) -> str:
        attached, finished = attach(store, slurm, job_id, stdout=None, stderr=None, source=RecordSource.WATCH_ALL)
        pid = start_monitor(paths, attached.job_id)
        return f"monitor started (pid {pid}{', the job had already ended' if finished else ''})"

    try:
        grace = float(os.environ.get("JOBMON_WATCH_GRACE", GRACE))
    except ValueError:
        grace = GRACE
    watcher = Watcher(store, lambda: shared.queue_snapshot(), wanted, attach_one, grace=max(0.0, grace))
    interval = max(MIN_INTERVAL, config.running_interval)
    log.info("watching every new job of yours: %s", wanted.describe())
    while not stop.is_set():
        try:
            for line in watcher.step(time.time()):
                log.info("%s", line)
        except JobmonError as exc:  # an unreadable state folder, a lock held too long: the next round may do
            log.warning("%s", exc)
        record.heartbeat = time.time()
        try:
            save_service(path, record)
        except OSError as exc:
            log.warning("could not write the heartbeat: %s", exc)
        stop.wait(interval)
    current = load_service(path)
    if current is None or current.pid == record.pid:
        record.stopped_at = time.time()
        save_service(path, record)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
