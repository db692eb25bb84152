"""Schema migrations of job records: each step turns the JSON of one version into the next.

Files are upgraded in memory when read; a file is written in the new schema the next time jobmon
changes it. A monitor daemon of an older jobmon still running on an old file keeps it in the old
schema; when a newer jobmon writes that file (only `jobmon cancel` does while a monitor lives, and it
stops that monitor anyway), the old daemon refuses the newer schema at its next poll and exits.
Tested with the previous jobmon itself on the real Slurm (tests/integration/test_upgrade.py).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from core.state.model import SCHEMA_VERSION

Data = Dict[str, Any]


def upgrade(data: Data) -> Data:
    """The record `data` (any known schema) as the current schema; raises ValueError for a newer one."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"schema version {version!r} is not a number")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is newer than this jobmon understands ({SCHEMA_VERSION}); "
                         "upgrade jobmon")
    for step in range(max(version, 1), SCHEMA_VERSION):
        data = MIGRATIONS[step](data)
    return data


def v1_to_v2(old: Data) -> Data:
    """Schema 1 -> 2: typed chain decisions and levels, and the single notification becomes an outbox.

    - `notification` (status, channel, ...) and `first_failure_notified` become outbox entries; an
      undelivered one keeps no message (the monitor renders it from the record before sending);
      `done` is no longer stored (it follows from the outbox);
    - a chain saved before array rounds existed gets its rounds (attempt N was round N) and its
      single pending decision becomes one submission; an empty pending decision becomes null;
    - an empty observation state or attempt state becomes null; `observation.restarts` goes.
    """
    data = dict(old)
    job_id = str(data.get("job_id", ""))
    observation = _section(data.get("observation"), "observation")
    observation.pop("restarts", None)
    observation["state"] = observation.get("state") or None
    data["observation"] = observation
    if data.get("chain") is not None:
        data["chain"] = _chain_v2(_section(data["chain"], "chain"))
    data["outbox"] = _outbox_v2(data, job_id)
    for key in ("notification", "done", "first_failure_notified"):
        data.pop(key, None)
    data["schema_version"] = 2
    return data


def _chain_v2(old: Data) -> Data:
    chain = dict(old)
    attempts = chain.get("attempts") or []
    if not isinstance(attempts, list):
        raise ValueError(f"chain.attempts: expected a list, got {type(attempts).__name__}")
    attempts = [_section(a, f"chain.attempts[{index}]", required=True) for index, a in enumerate(attempts)]
    pending = _section(chain.get("pending"), "chain.pending")
    if "round" not in chain:  # saved before array rounds existed
        for number, attempt in enumerate(attempts, 1):
            attempt["round"] = number
        chain["round"] = max(1, len(attempts))
        if pending and "submissions" not in pending:
            decided_at = pending.pop("decided_at", 0.0)
            pending = {"round": chain["round"] + 1, "decided_at": decided_at, "submissions": [{**pending, "tasks": ""}]}
    for attempt in attempts:
        attempt["state"] = attempt.get("state") or None
    chain["attempts"] = attempts
    chain["pending"] = pending or None
    return chain


def _outbox_v2(data: Data, job_id: str) -> list:
    """The schema-1 notification as the record's FINAL entry (and the first-failure warning, if sent)."""
    entries = []
    if data.get("first_failure_notified"):
        entries.append(_entry(f"{job_id}:first_failure:1", "first_failure", "error", data.get("created_at", 0.0),
                              sink="discord-error", status="delivered"))
    note = _section(data.get("notification"), "notification")
    status = note.get("status", "none")
    if status != "none":
        channel = "success" if note.get("channel") == "success" else "error"
        final = _section(data.get("final"), "final")
        entry = _entry(f"{job_id}:final:1", "final", channel, final.get("decided_at", 0.0),
                       sink=f"discord-{channel}", status=status)
        if status in ("sent", "gone"):
            delivery = entry["deliveries"][f"discord-{channel}"]
            delivery.update(attempts=note.get("attempts", 0), last_error=note.get("last_error", ""),
                            delivered_at=note.get("sent_at", 0.0), message_id=note.get("message_id", ""))
        entries.append(entry)
    return entries


def _section(value: Any, where: str, required: bool = False) -> Data:
    """A copy of one object of the old record ({} when absent); ValueError when it is something else."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    return dict(value)


def _entry(key: str, kind: str, route: str, created_at: float, *, sink: str, status: str) -> Data:
    """A sent (or gone) message keeps its delivery; any other is re-routed and sent by the next monitor."""
    entry: Data = {"key": key, "kind": kind, "route": route, "created_at": created_at, "message": None,
                   "routed_at": 0.0, "deliveries": {}}
    if status in ("sent", "delivered", "gone"):
        entry["routed_at"] = created_at or 1.0
        entry["deliveries"] = {sink: {"status": "gone" if status == "gone" else "delivered"}}
    return entry


MIGRATIONS: Dict[int, Callable[[Data], Data]] = {1: v1_to_v2}
