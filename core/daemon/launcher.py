"""Start a job's monitor daemon: claim the job in its record (refusing when a live monitor has it), then
detach a fresh interpreter running `python -m core.daemon JOBID`."""
from __future__ import annotations

import time

from core.config import Paths, load_config
from core.daemon.liveness import Health, monitor_health, this_host
from core.daemon.process import child_env, detach_and_exec, module_argv
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
    return detach_and_exec(module_argv("core.daemon", job_id), paths.monitor_log(job_id), child_env(paths))
