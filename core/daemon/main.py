"""The loops that drive a Monitor: the detached daemon's (`python -m core.daemon JOBID`) and the CLI's
inline one. Both only step the monitor and sleep until the time it asks for."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, List, Optional

from core.config import Config, Paths, load_config
from core.daemon.launcher import daemon_argv
from core.daemon.liveness import Health, monitor_health, this_host
from core.daemon.process import log_to, replace_process
from core.errors import JobmonError, StateError, StateLocked
from core.locking import use_lean_locks
from core.logs import log
from core.monitor.monitor import Monitor
from core.state.model import JobRecord
from core.state.store import StateStore

#: After a record's lock was held elsewhere for the whole wait (a stuck process, a slow NFS server).
LOCKED_RETRY = 30.0
#: A daemon replaces itself by a fresh interpreter (exec: same pid, same log) after this many steps. Its
#: RSS creeps by about 1 KiB per poll while its Python objects stay the same (the allocators' heaps,
#: README "Memory of one daemon over time"); a fresh one is back at its first size. An hour at 30 s.
RENEW_AFTER_STEPS = 120
#: Overrides RENEW_AFTER_STEPS (a number of steps; 0: never), for tests and for debugging a daemon.
RENEW_ENV = "JOBMON_RENEW_AFTER"


def renew_after_steps() -> int:
    text = os.environ.get(RENEW_ENV, "").strip()
    return int(text) if text.isdigit() else RENEW_AFTER_STEPS


def drive(monitor: Monitor, sleep: Callable[[float], None], clock: Callable[[], float] = time.time,
          renew: Optional[Callable[[], None]] = None, renew_after: int = RENEW_AFTER_STEPS) -> None:
    """Step the monitor until it has nothing left to do, sleeping until each wake it asks for.

    With `renew`, call it before a step once `renew_after` steps were made, unless the record lives only
    in this process (the disk refuses writes): it replaces the process, or returns when it could not.
    """
    steps = 0
    while True:
        if renew is not None and steps >= renew_after and not monitor.records.in_memory:
            renew()
            renew, steps = None, 0  # it returned: the exec failed; go on as we are
        steps += 1
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

        def renew() -> None:
            if stop.is_set():  # asked to stop (SIGTERM) while it slept: the next step ends it, a fresh one would not
                return
            argv = daemon_argv(job_id)
            log.info("job %s: replacing this daemon by a fresh one (same pid) to give back its memory", job_id)
            exclusive.release()
            try:
                replace_process(argv)
            except OSError as exc:  # the interpreter was removed or replaced meanwhile: stay as we are
                log.warning("job %s: could not start a fresh daemon (%s); going on in this one", job_id, exc)
                try:
                    exclusive.acquire()
                except TimeoutError:
                    raise StateError(f"another monitor took job {job_id} meanwhile; exiting") from None

        after = renew_after_steps()
        drive(monitor, lambda seconds: None if stop.wait(seconds) else None, renew=renew if after else None,
              renew_after=after)
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
