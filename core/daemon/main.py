"""Detached monitor daemons: start one per job, tell whether it lives, and its main function."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional

from core.config import Paths, load_config, load_patterns
from core.errors import JobmonError, StateError
from core.locking import use_lean_locks
from core.monitor.monitor import Monitor, MonitorDeps
from core.state.store import JobRecord, StateStore

#: How long a claim by `start_monitor` protects a job before the daemon's own heartbeat takes over.
STARTUP_CLAIM = 30.0

HEALTH_ALIVE = "ALIVE"
HEALTH_DEAD = "DEAD"
HEALTH_DONE = "DONE"
HEALTH_CANCELLED = "CANCELLED"
HEALTH_SUSPECT = "SUSPECT"  # pid gone, heartbeat not yet stale: becomes DEAD unless it beats again


def process_start_ticks(pid: int) -> Optional[int]:
    """Start time of a process in clock ticks since boot, so a recycled pid is not taken for ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] == "Z":
            return None  # a zombie has finished
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_process_alive(pid: int, start_ticks: int) -> bool:
    if pid <= 0:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (not start_ticks or ticks == start_ticks)


def monitor_health(record: JobRecord, host: str, now: float) -> str:
    """ALIVE / DEAD / DONE / CANCELLED / SUSPECT. DEAD needs the pid gone *and* a stale heartbeat.

    On another host the pid cannot be checked, so only the heartbeat counts there.
    """
    if record.monitor.stop_requested:
        return HEALTH_CANCELLED
    if record.done:
        return HEALTH_DONE
    monitor = record.monitor
    stale = now > monitor.heartbeat_deadline
    if monitor.host and monitor.host != host:
        return HEALTH_DEAD if stale else HEALTH_ALIVE
    if is_process_alive(monitor.pid, monitor.start_ticks):
        return HEALTH_ALIVE
    return HEALTH_DEAD if stale else HEALTH_SUSPECT


def detach_and_exec(argv: List[str], log_path: str, env: dict) -> int:
    """Double-fork + setsid, stdio to /dev/null and the log, SIGHUP ignored, then exec `argv`.

    Returns the daemon's pid. Exec gives the daemon a fresh, lean interpreter and means no lock
    object or thread of the caller crosses the fork.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild > 0:
                os.write(write_end, str(grandchild).encode())
                os._exit(0)
            os.close(write_end)
            os.chdir("/")
            os.umask(0o077)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            stdin = os.open(os.devnull, os.O_RDONLY)
            out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(stdin, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(write_end)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    if not data:
        raise JobmonError("could not start the monitor daemon (fork failed)")
    return int(data)


PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def daemon_argv(job_id: str) -> List[str]:
    """A fresh interpreter running only this module: no CLI, no argparse, a small idle footprint."""
    return [sys.executable, "-m", "core.daemon.main", job_id]


def start_monitor(paths: Paths, job_id: str, *, allow_restart: bool = False) -> int:
    """Claim the job for a new daemon (refusing if a live one has it) and start the daemon.

    config.json is checked here, in full, because the daemon trusts it (see load_config).
    """
    load_config(paths, require_webhook=False)
    store = StateStore(paths.state)
    host = os.uname().nodename
    now = time.time()

    def claim(record: JobRecord) -> None:
        health = monitor_health(record, host, now)
        if record.monitor.pid or record.monitor.heartbeat:
            if health in (HEALTH_ALIVE, HEALTH_SUSPECT) or (health == HEALTH_DEAD and not allow_restart):
                where = f" on {record.monitor.host}" if record.monitor.host else ""
                raise StateError(f"job {job_id} already has a monitor{where} (pid {record.monitor.pid}, {health})")
        record.monitor.pid = 0
        record.monitor.start_ticks = 0
        record.monitor.host = host
        record.monitor.heartbeat = now
        record.monitor.heartbeat_deadline = now + STARTUP_CLAIM
        record.monitor.started_at = now

    store.update(job_id, claim)
    python_path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, JOBMON_HOME=paths.home, PYTHONPATH=python_path)
    return detach_and_exec(daemon_argv(job_id), paths.monitor_log(job_id), env)


def paced_sender(state_folder: str):
    """Send through the per-webhook pacer shared by all daemons (no 429 storms when 50 jobs end).

    notifier is imported on first use: requests costs ~15 MB that an idle daemon never needs.
    """
    def send_paced(url: str, payload: dict):
        from core.notify.discord import send
        from core.notify.pacing import WebhookPacer

        return WebhookPacer(state_folder).send(url, payload, send)

    return send_paced


def patterns_or_builtin(paths: Paths, log: logging.Logger):
    """The user's patterns merged in; if that file broke since submission, the built-ins still work."""
    from core.analysis.analyzer import parse_patterns
    from core.config import BUILTIN_PATTERNS, read_patterns_file
    from core.errors import PatternError

    try:
        return load_patterns(paths)
    except PatternError as exc:
        log.error("%s; analysing with the built-in patterns only", exc)
        return parse_patterns(read_patterns_file(BUILTIN_PATTERNS), BUILTIN_PATTERNS)


def resubmit_attempt(slurm, record: JobRecord, level, attempt: int, tasks: str):
    from core.chain.submitter import chain_comment, resubmit

    return resubmit(slurm, record, level, chain_comment(record, attempt), tasks)


def find_attempt(slurm, record: JobRecord, attempt: int, tasks: str):
    """(job id, stdout, stderr) of an attempt already submitted before a crash, or None."""
    from core.chain.submitter import attempt_log_paths, chain_comment

    job_id = slurm.find_by_comment(chain_comment(record, attempt), since=record.chain.pending.get("decided_at", 0.0))
    return (job_id, *attempt_log_paths(slurm, record, job_id, tasks)) if job_id else None


def run_daemon(paths: Paths, job_id: str) -> int:
    """The daemon's main: take the job's monitor lock, then run the poll loop until the story ends."""
    use_lean_locks()  # before any lock: this long-lived process must not carry filelock's imports

    from core.slurm.client import Slurm
    from core.slurm.shared import SharedSlurm

    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO,
        format=f"%(asctime)s {job_id} pid={os.getpid()} %(levelname)s %(message)s",
    )
    log = logging.getLogger("jobmon.daemon")
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
        host = os.uname().nodename  # what socket.gethostname() returns, without importing socket
        record = store.load(job_id)
        monitor = record.monitor
        if monitor.host and monitor.host != host and time.time() < monitor.heartbeat_deadline:
            log.error("job %s is monitored on %s (heartbeat fresh); exiting", job_id, monitor.host)
            return 1
        slurm = Slurm()
        deps = MonitorDeps(
            slurm=SharedSlurm(slurm, paths.state, max_age=config.running_interval),
            store=store,
            config=config,
            patterns=lambda: patterns_or_builtin(paths, log),
            send=paced_sender(paths.state),
            sleep=lambda seconds: stop.wait(seconds) and None,
            host=host,
            start_ticks=process_start_ticks(os.getpid()) or 0,
            should_stop=stop.is_set,
            resubmit=lambda record, level, attempt, tasks: resubmit_attempt(slurm, record, level, attempt, tasks),
            find_submitted=lambda record, attempt, tasks: find_attempt(slurm, record, attempt, tasks),
        )
        log.info("monitoring job %s (poll %.0f s running, %.0f s pending; heartbeat grace %.0f s)", job_id,
                 config.running_interval, config.pending_interval, config.heartbeat_grace)
        result = Monitor(job_id, deps).run()
        log.info("monitor finished: %s", result)
        return 0
    except JobmonError as exc:
        log.error("%s", exc)
        return 1
    finally:
        exclusive.release()


def main(argv: List[str]) -> int:
    """`python -m core.daemon.main JOBID`: what detach_and_exec runs."""
    from core.config import resolve_paths

    if len(argv) != 1:
        raise SystemExit("usage: python -m core.daemon.main JOBID")
    return run_daemon(resolve_paths(), argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
