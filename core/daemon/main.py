"""The loops that drive a Monitor: the detached daemon's (`python -m core.daemon JOBID`) and the CLI's
inline one. Both only step the monitor and sleep until the time it asks for."""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable, List

from core.config import Config, Paths, load_config
from core.daemon.liveness import Health, monitor_health, this_host
from core.daemon.process import log_to
from core.errors import JobmonError, StateError, StateLocked
from core.locking import use_lean_locks
from core.logs import log
from core.monitor.monitor import Monitor
from core.state.model import JobRecord
from core.state.store import StateStore

#: After a record's lock was held elsewhere for the whole wait (a stuck process, a slow NFS server).
LOCKED_RETRY = 30.0


def drive(monitor: Monitor, sleep: Callable[[float], None], clock: Callable[[], float] = time.time) -> None:
    """Step the monitor until it has nothing left to do, sleeping until each wake it asks for."""
    while True:
        try:
            wake = monitor.step(clock())
        except StateLocked as exc:
            log.warning("%s; stepping again in %.0f s", exc, LOCKED_RETRY)
            wake = clock() + LOCKED_RETRY
        if wake is None:
            return
        sleep(max(0.0, wake - clock()))


def run_daemon(paths: Paths, job_id: str) -> int:
    """The daemon's main: take the job's monitor lock, then step its monitor until the story ends."""
    use_lean_locks()  # before any lock: this long-lived process must not carry filelock's imports
    from core.daemon.compose import daemon_monitor

    log_to(sys.stdout, job_id)
    store = StateStore(paths.state)
    exclusive = store.monitor_lock(job_id)
    try:
        exclusive.acquire()
    except TimeoutError:  # held by a live monitor (filelock.Timeout and LockTimeout are both TimeoutErrors)
        log.error("another monitor already holds job %s; exiting", job_id)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(paths, require_webhook=False, trusted=True)
        record = store.load(job_id)
        if record.monitor.host != this_host() and monitor_health(record, this_host(), time.time()) is Health.ALIVE:
            log.error("job %s is monitored on %s (heartbeat fresh); exiting", job_id, record.monitor.host)
            return 1
        log.info("monitoring job %s (poll %.0f s running, %.0f s pending; heartbeat grace %.0f s)", job_id,
                 config.running_interval, config.pending_interval, config.heartbeat_grace)
        monitor = daemon_monitor(paths, config, job_id, stop.is_set)
        monitor.announce(time.time())
        drive(monitor, lambda seconds: None if stop.wait(seconds) else None)
        log.info("monitor finished")
        return 0
    except JobmonError as exc:
        log.error("%s", exc)
        return 1
    finally:
        exclusive.release()


def run_inline(paths: Paths, config: Config, job_id: str) -> JobRecord:
    """Tell a job's story in this process (it has already ended: no daemon needed); the record after."""
    from core.daemon.compose import inline_monitor

    store = StateStore(paths.state)
    exclusive = store.monitor_lock(job_id)
    try:
        exclusive.acquire()
    except TimeoutError:  # a `recover` elsewhere started a daemon for it first: that one tells the story
        raise StateError(f"job {job_id} is already being monitored by another process; see `jobmon status`") from None
    try:
        drive(inline_monitor(paths, config, job_id), time.sleep)
    finally:
        exclusive.release()
    return store.load(job_id)


def main(argv: List[str]) -> int:
    """`python -m core.daemon JOBID`: what detach_and_exec runs."""
    from core.config import resolve_paths

    if len(argv) != 1:
        raise SystemExit("usage: python -m core.daemon JOBID")
    return run_daemon(resolve_paths(), argv[0])
