"""The small record of a per-user background service (`jobmon serve` in `state/serve.json`, `jobmon watch --all`
in `state/watch-all.json`): its process, how it was started, and its heartbeat.

The service writes it when it starts and refreshes the heartbeat while it runs; `status` reads it to show the
service, `--stop` to stop it, `recover` to restart a dead one. Its liveness follows the monitors' rule
(core/daemon/liveness.py): on its own host the pid and the process's start time decide.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

from core.daemon.liveness import Health, is_process_alive, process_start_ticks, this_host
from core.daemon.process import detach_and_exec
from core.errors import JobmonError
from core.files import atomic_write_text

#: A service refreshes its heartbeat this often; on another host it counts as alive for twice as long.
HEARTBEAT_EVERY = 30.0
#: How long starting a detached service may take before it counts as failed.
START_WAIT = 10.0


@dataclass
class ServiceRecord:
    pid: int = 0
    start_ticks: int = 0
    host: str = ""
    bind: str = ""
    port: int = 0
    started_at: float = 0.0
    heartbeat: float = 0.0
    stopped_at: float = 0.0  # set when it stopped on its own (Ctrl-C, SIGTERM)
    args: List[str] = field(default_factory=list)  # how it was started: `recover` starts it again so

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"


def load_service(path: str) -> Optional[ServiceRecord]:
    """The record of the last service started with this file; None if there never was one (or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return ServiceRecord(**{key: data[key] for key in ServiceRecord.__dataclass_fields__ if key in data})
    except (OSError, ValueError, TypeError):
        return None


def save_service(path: str, record: ServiceRecord) -> None:
    atomic_write_text(path, json.dumps(asdict(record)))


def this_service(now: float, *, bind: str = "", port: int = 0, args: Optional[List[str]] = None) -> ServiceRecord:
    pid = os.getpid()
    return ServiceRecord(pid=pid, start_ticks=process_start_ticks(pid) or 0, host=this_host(), bind=bind, port=port,
                         started_at=now, heartbeat=now, args=list(args or []))


def service_health(record: ServiceRecord, host: str, now: float) -> Health:
    """ALIVE or DEAD (DONE once it stopped on its own)."""
    if record.stopped_at:
        return Health.DONE
    if record.host and record.host != host:
        return Health.ALIVE if now - record.heartbeat < 2 * HEARTBEAT_EVERY else Health.DEAD
    return Health.ALIVE if is_process_alive(record.pid, record.start_ticks) else Health.DEAD


def stop_service(record: ServiceRecord) -> bool:
    """SIGTERM to a service on this host; True if one was signalled."""
    if record.host != this_host() or not is_process_alive(record.pid, record.start_ticks):
        return False
    try:
        os.kill(record.pid, signal.SIGTERM)
    except OSError:
        return False
    return True


def detach_service(argv: List[str], log_path: str, env: Dict[str, str],
                   load: Callable[[], Optional[ServiceRecord]], what: str) -> ServiceRecord:
    """Start a per-user service detached (like the monitors) and wait until it wrote its record, which
    proves it runs; a service that did not within START_WAIT is an error pointing at its log."""
    pid = detach_and_exec(argv, log_path, env)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        record = load()
        if record is not None and record.pid == pid and not record.stopped_at:
            return record
        time.sleep(0.1)
    raise JobmonError(f"{what} (pid {pid}) did not start within {START_WAIT:g} s; see {log_path}")
