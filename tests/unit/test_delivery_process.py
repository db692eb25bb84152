"""core.daemon.delivery and `python -m core.daemon.deliver`: a monitor daemon's outbox delivered by a real
short-lived child process, to the local Discord-compatible receiver; its lock, its failures, and the
in-memory fallback when the disk refuses writes."""
from __future__ import annotations

import json
import os
import time
from typing import List

import pytest

from core.config import Config, Paths
from core.daemon.delivery import BUSY_RETRY, ChildDelivery, InProcessDelivery
from core.errors import StateWriteError
from core.locking import FlockLock
from core.monitor.records import Records
from core.notify.events import EventKind, Route
from core.notify.message import Message
from core.notify.outbox import DeliveryStatus, OutboxEntry, route_entry
from core.state.model import JobRecord
from core.state.store import StateStore

JOB = "77"


@pytest.fixture
def home(tmp_path, receiver):
    paths = Paths(str(tmp_path))
    paths.ensure()
    (tmp_path / "config.json").write_text(json.dumps({"discord": {"error_webhook": receiver.webhook_url("err")}}))
    store = StateStore(paths.state)
    entry = OutboxEntry(f"{JOB}:final:1", EventKind.FINAL, Route.ERROR, created_at=time.time(),
                        message=Message(title=f"Job {JOB} (train): FAILED"))
    route_entry(entry, ["discord-error"], time.time())
    store.create(JobRecord(JOB, name="train", outbox=[entry]))
    return paths


def delivery(records: Records) -> object:
    return records.load().outbox[0].deliveries["discord-error"]


def child(paths: Paths) -> ChildDelivery:
    config = Config(error_webhook="unused")
    store = StateStore(paths.state)
    return ChildDelivery(paths, lambda: InProcessDelivery(store, config, owner="test:1"), should_stop=lambda: False)


def test_a_child_process_delivers_and_records_it(home, receiver):
    records = Records(StateStore(home.state), JOB)
    assert child(home).deliver(records) is None
    sent = delivery(records)
    assert sent.status is DeliveryStatus.DELIVERED and sent.attempts == 1
    assert [m["payload"]["embeds"][0]["title"] for m in receiver.messages("err")] == ["Job 77 (train): FAILED"]


def test_a_child_that_fails_outright_counts_a_failed_attempt_so_backoff_and_give_up_apply(home, receiver):
    with open(home.config, "w", encoding="utf-8") as handle:
        handle.write("{ not json")  # the config broke after the monitor started
    records = Records(StateStore(home.state), JOB)
    before = time.time()
    assert child(home).deliver(records) is None
    failed = delivery(records)
    assert failed.status is DeliveryStatus.PENDING and failed.attempts == 1
    assert failed.next_attempt_at >= before + 1.0 and "delivery process failed (exit 1" in failed.last_error
    assert receiver.messages() == []


def test_a_child_finding_the_outbox_locked_leaves_it_to_the_holder(home, receiver):
    held = FlockLock(os.path.join(home.state, f"{JOB}.deliver.lock"), 0)  # an orphaned child still sending
    held.acquire()
    try:
        records = Records(StateStore(home.state), JOB)
        assert child(home).deliver(records) == BUSY_RETRY
        assert delivery(records).attempts == 0 and receiver.messages() == []
    finally:
        held.release()


def test_while_the_disk_refuses_writes_this_process_delivers_its_in_memory_record(home, receiver):
    class ReadOnly(StateStore):
        def save(self, record: JobRecord) -> None:
            raise StateWriteError("cannot write state file: Read-only file system")

    records = Records(ReadOnly(home.state), JOB)
    records.update(lambda record: None)  # the write fails: the record now lives in memory
    assert records.in_memory
    seen: List[str] = []
    fallback = InProcessDelivery(ReadOnly(home.state), Config(error_webhook=receiver.webhook_url("err")), "test:1")
    delivering = ChildDelivery(home, lambda: seen.append("in process") or fallback, should_stop=lambda: False)
    assert delivering.deliver(records) is None
    assert seen == ["in process"] and delivery(records).status is DeliveryStatus.DELIVERED
    assert len(receiver.messages("err")) == 1
    on_disk = StateStore(home.state).load(JOB).outbox[0].deliveries["discord-error"]
    assert on_disk.status is DeliveryStatus.PENDING  # nothing reached the disk, and nothing was sent twice


def test_the_child_process_asks_the_attribution_service_before_the_final_message(home, receiver):
    from tests.attrsvc_receiver import AttrsvcReceiver

    service = AttrsvcReceiver(action="STOP", reason="bad input data: will fail again").start()
    try:
        with open(home.config, "w", encoding="utf-8") as handle:
            json.dump({"discord": {"error_webhook": receiver.webhook_url("err")},
                       "notify": {"sinks": {"attr": {"type": "attrsvc", "url": service.url}}}}, handle)
        store = StateStore(home.state)
        store.update(JOB, lambda record: setattr(record, "stdout_path", "/logs/slurm-77.out"))
        records = Records(store, JOB)
        assert child(home).deliver(records) is None
    finally:
        service.stop()
    assert [item["log_path"] for item in service.submitted] == ["/logs/slurm-77.out"]
    assert delivery(records).status is DeliveryStatus.DELIVERED
    [sent] = receiver.messages("err")
    assert "STOP: bad input data: will fail again" in json.dumps(sent["payload"])
