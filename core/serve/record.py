"""`jobmon serve`'s record, `state/serve.json` (a service record: see core/daemon/service.py)."""
from __future__ import annotations

import os
from typing import Optional

from core.daemon.service import (
    HEARTBEAT_EVERY,
    ServiceRecord,
    load_service,
    save_service,
    service_health,
    stop_service,
    this_service,
)

__all__ = ["HEARTBEAT_EVERY", "ServerRecord", "load_server", "save_server", "server_health", "stop_server",
           "this_server"]

SERVER_FILE = "serve.json"
ServerRecord = ServiceRecord
server_health = service_health
stop_server = stop_service


def load_server(state_folder: str) -> Optional[ServiceRecord]:
    return load_service(os.path.join(state_folder, SERVER_FILE))


def save_server(state_folder: str, record: ServiceRecord) -> None:
    save_service(os.path.join(state_folder, SERVER_FILE), record)


def this_server(bind: str, port: int, now: float) -> ServiceRecord:
    return this_service(now, bind=bind, port=port)
