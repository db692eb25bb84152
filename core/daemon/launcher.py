"""Start a job's monitor daemon: claim the job in its record (refusing when a live monitor has it), then
detach a fresh interpreter running `python -m core.daemon JOBID`."""
from __future__ import annotations

import os
import time
from typing import List

from core.config import Paths, load_config
from core.daemon.liveness import Health, monitor_health, this_host
from core.daemon.process import PACKAGE_PARENT, child_env, detach_and_exec, module_argv
from core.errors import AlreadyMonitored
from core.state.model import JobRecord
from core.state.store import StateStore

#: How long a claim by `start_monitor` protects a job before the daemon's own heartbeat takes over.
STARTUP_CLAIM = 30.0


def start_monitor(paths: Paths, job_id: str, *, allow_restart: bool = False) -> int:
    """Claim the job for a new daemon (refusing if a live one has it) and start the daemon; its pid.

    config.json is checked here, in full, because the daemon trusts it (see load_config).
    """
    load_config(paths, require_webhook=False)
    store = StateStore(paths.state)
    host = this_host()
    now = time.time()

    def claim(record: JobRecord) -> None:
        health = monitor_health(record, host, now)
        if record.monitor.pid or record.monitor.heartbeat:
            if health in (Health.ALIVE, Health.SUSPECT) or (health is Health.DEAD and not allow_restart):
                where = f" on {record.monitor.host}" if record.monitor.host else ""
                raise AlreadyMonitored(
                    f"job {job_id} already has a monitor{where} (pid {record.monitor.pid}, {health.value})")
        record.monitor.pid = 0
        record.monitor.start_ticks = 0
        record.monitor.host = host
        record.monitor.heartbeat = now
        record.monitor.heartbeat_deadline = now + STARTUP_CLAIM
        record.monitor.started_at = now

    store.update(job_id, claim)
    compile_package(os.path.join(PACKAGE_PARENT, "core"))
    return detach_and_exec(daemon_argv(job_id), paths.monitor_log(job_id), child_env(paths))


def compile_package(folder: str) -> None:
    """Write the package's missing bytecode where the folder allows it, as pip does at install time.

    Done even under PYTHONDONTWRITEBYTECODE, and only for jobmon's own modules: a daemon that
    compiles jobmon's source itself keeps the compiler's leftovers for its whole life (measured:
    16,564 KiB against 15,464 KiB with bytecode). Up to date, this only compares timestamps.
    """
    import compileall

    compileall.compile_dir(folder, quiet=2)


def daemon_argv(job_id: str) -> List[str]:
    """The daemon's command line: without site-packages, which it needs only to deliver itself (0.2 MB less)."""
    return module_argv("core.daemon", job_id, site=False)
