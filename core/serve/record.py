"""The server's own small record, `state/serve.json`: who serves, where, and its heartbeat.

`jobmon serve` writes it when it starts listening and refreshes the heartbeat while it runs; `status`
reads it to show the server, `serve --stop` to stop it. Its liveness follows the monitors' rule
(core/daemon/liveness.py): on its own host the pid and the process's start time decide.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from typing import Optional

from core.daemon.liveness import Health, is_process_alive, process_start_ticks, this_host
from core.files import atomic_write_text

SERVER_FILE = "serve.json"
#: The server refreshes its heartbeat this often; on another host it counts as alive for twice as long.
HEARTBEAT_EVERY = 30.0


@dataclass
class ServerRecord:
    pid: int = 0
    start_ticks: int = 0
    host: str = ""
    bind: str = ""
    port: int = 0
    started_at: float = 0.0
    heartbeat: float = 0.0
    stopped_at: float = 0.0  # set when it stopped on its own (Ctrl-C, SIGTERM)

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"


def server_path(state_folder: str) -> str:
    return os.path.join(state_folder, SERVER_FILE)


def load_server(state_folder: str) -> Optional[ServerRecord]:
    """The record of the last server started over this folder; None if there never was one (or it is unreadable)."""
    try:
        with open(server_path(state_folder), encoding="utf-8") as handle:
            data = json.load(handle)
        return ServerRecord(**{key: data[key] for key in ServerRecord.__dataclass_fields__ if key in data})
    except (OSError, ValueError, TypeError):
        return None


def save_server(state_folder: str, record: ServerRecord) -> None:
    atomic_write_text(server_path(state_folder), json.dumps(asdict(record)))


def this_server(bind: str, port: int, now: float) -> ServerRecord:
    pid = os.getpid()
    return ServerRecord(pid=pid, start_ticks=process_start_ticks(pid) or 0, host=this_host(), bind=bind, port=port,
                        started_at=now, heartbeat=now)


def server_health(record: ServerRecord, host: str, now: float) -> Health:
    """ALIVE or DEAD (DONE once it stopped on its own)."""
    if record.stopped_at:
        return Health.DONE
    if record.host and record.host != host:
        return Health.ALIVE if now - record.heartbeat < 2 * HEARTBEAT_EVERY else Health.DEAD
    return Health.ALIVE if is_process_alive(record.pid, record.start_ticks) else Health.DEAD


def stop_server(record: ServerRecord) -> bool:
    """SIGTERM to a server on this host; True if one was signalled."""
    if record.host != this_host() or not is_process_alive(record.pid, record.start_ticks):
        return False
    try:
        os.kill(record.pid, signal.SIGTERM)
    except OSError:
        return False
    return True
