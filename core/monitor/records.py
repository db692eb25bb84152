"""One job's record as its monitor reads and writes it: through the store, or in memory while the
disk refuses writes (full or read-only), so a lost write can never make the monitor redo a step
(and, say, send a message twice)."""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

from core.errors import StateWriteError
from core.logs import log
from core.notify.outbox import OutboxEntry
from core.state.model import JobRecord
from core.state.store import StateStore


class Records:
    """load() and update(change) of one record; also the outbox access a deliverer needs."""

    def __init__(self, store: StateStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self._unsaved: Optional[JobRecord] = None  # our record while the disk refuses writes

    @property
    def in_memory(self) -> bool:
        """True while the record lives only here: nobody else (a delivery process) can see it."""
        return self._unsaved is not None

    def load(self) -> JobRecord:
        """The record on disk, or the newer copy held while the disk refuses writes."""
        return self._unsaved if self._unsaved is not None else self.store.load(self.job_id)

    def update(self, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` and write; keep the record in memory (and going) when the disk refuses writes.

        A lock held too long elsewhere (StateLocked) is not a refusal: it is raised to the caller.
        """
        if self._unsaved is None:
            try:
                return self.store.update(self.job_id, change)
            except StateWriteError as exc:
                log.error("job %s: %s; keeping the record in memory until the disk accepts it", self.job_id, exc)
                self._unsaved = self.store.load(self.job_id)
                change(self._unsaved)
                return self._unsaved
        change(self._unsaved)
        unsaved = self._unsaved
        try:
            record = self.store.update(self.job_id, lambda on_disk: _take_over(on_disk, unsaved))
        except StateWriteError:
            return unsaved
        log.info("job %s: state written again", self.job_id)
        self._unsaved = None
        return record

    # -- what core.notify.deliver needs (it knows outboxes, not job records) -----------------------
    def load_outbox(self) -> List[OutboxEntry]:
        return self.load().outbox

    def update_outbox(self, change: Callable[[List[OutboxEntry]], None]) -> None:
        self.update(lambda record: change(record.outbox))


def _take_over(on_disk: JobRecord, ours: JobRecord) -> None:
    """Write our in-memory record over the file, keeping a stop request made meanwhile (`jobmon cancel`)."""
    stop, stopped_at = on_disk.monitor.stop_requested, on_disk.monitor.stopped_at
    for item in dataclasses.fields(JobRecord):
        setattr(on_disk, item.name, getattr(ours, item.name))
    if stop and not on_disk.monitor.stop_requested:
        on_disk.monitor.stop_requested, on_disk.monitor.stopped_at = stop, stopped_at
