"""`python -m core.daemon.deliver JOBID`: deliver what is due in one job's outbox, then exit.

A monitor daemon runs this instead of sending itself, so the daemon never imports `requests` (or
any other sink's library) and stays small however long it lives. Exit 0 when done, BUSY when
another process holds the job's delivery lock, 1 on an error (written to the monitor's log).
"""
from __future__ import annotations

import sys
from typing import List

from core.config import load_config, resolve_paths
from core.daemon.delivery import BUSY, InProcessDelivery
from core.daemon.liveness import this_process
from core.daemon.process import log_to
from core.errors import JobmonError
from core.logs import log
from core.monitor.records import Records
from core.state.store import StateStore


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python -m core.daemon.deliver JOBID")
    job_id = argv[0]
    log_to(sys.stderr, job_id)
    paths = resolve_paths()
    try:
        config = load_config(paths, require_webhook=False, trusted=True)  # checked when the monitor started
        store = StateStore(paths.state)
        deliverer = InProcessDelivery(store, config, owner=this_process().owner)
        return BUSY if deliverer.deliver(Records(store, job_id)) is not None else 0
    except JobmonError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
