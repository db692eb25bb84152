"""core.daemon.liveness: whether a monitor lives, decided by its pid and start time on its own host
(at once, whatever the heartbeat says) and by its heartbeat elsewhere; and stopping one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from core.daemon.liveness import (
    Health,
    is_process_alive,
    monitor_health,
    process_start_ticks,
    stop_monitor,
    this_host,
)
from core.notify.events import EventKind, Route
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery
from core.slurm.model import JobState
from core.state.model import FinalRecord, JobRecord, MonitorInfo

NOW = 1_000_000.0
HOST = "login1"


@pytest.fixture
def child():
    """A real process we own, for pid and start-time checks."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def record(monitor: MonitorInfo, **changes) -> JobRecord:
    job = JobRecord("7", monitor=monitor)
    for key, value in changes.items():
        setattr(job, key, value)
    return job


def delivered_final() -> OutboxEntry:
    return OutboxEntry("7:final:1", EventKind.FINAL, Route.SUCCESS, routed_at=1.0,
                       deliveries={"discord-success": SinkDelivery(status=DeliveryStatus.DELIVERED)})


def test_a_live_process_with_its_start_time_is_alive(child):
    ticks = process_start_ticks(child.pid)
    monitor = MonitorInfo(pid=child.pid, start_ticks=ticks, host=HOST, heartbeat_deadline=NOW - 1000)
    assert monitor_health(record(monitor), HOST, NOW) is Health.ALIVE  # a stale heartbeat does not matter here


def test_a_gone_pid_on_its_own_host_is_dead_at_once_however_fresh_the_heartbeat():
    monitor = MonitorInfo(pid=gone_pid(), start_ticks=12345, host=HOST, heartbeat_deadline=NOW + 120)
    assert monitor_health(record(monitor), HOST, NOW) is Health.DEAD


def test_a_recycled_pid_is_not_taken_for_the_monitor(child):
    ticks = process_start_ticks(child.pid)
    monitor = MonitorInfo(pid=child.pid, start_ticks=ticks + 1, host=HOST, heartbeat_deadline=NOW + 120)
    assert not is_process_alive(child.pid, ticks + 1)
    assert monitor_health(record(monitor), HOST, NOW) is Health.DEAD


def test_a_monitor_being_started_is_suspect_until_its_claim_runs_out():
    claimed = MonitorInfo(pid=0, host=HOST, heartbeat=NOW, heartbeat_deadline=NOW + 30)
    assert monitor_health(record(claimed), HOST, NOW) is Health.SUSPECT
    assert monitor_health(record(claimed), HOST, NOW + 31) is Health.DEAD


def test_on_another_host_only_the_heartbeat_counts():
    elsewhere = MonitorInfo(pid=gone_pid(), host="login2", heartbeat_deadline=NOW + 10)
    assert monitor_health(record(elsewhere), HOST, NOW) is Health.ALIVE
    assert monitor_health(record(elsewhere), HOST, NOW + 11) is Health.DEAD


def test_cancelled_and_done_come_first():
    dead = MonitorInfo(pid=gone_pid(), host=HOST)
    assert monitor_health(record(MonitorInfo(pid=0, stop_requested=True)), HOST, NOW) is Health.CANCELLED
    done = record(dead, final=FinalRecord(state=JobState.COMPLETED), outbox=[delivered_final()])
    assert done.done and monitor_health(done, HOST, NOW) is Health.DONE


def test_a_zombie_is_not_alive():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
        assert not is_process_alive(pid, 0)
    finally:
        os.waitpid(pid, 0)


def test_stop_monitor_signals_only_a_live_monitor_on_this_host(child):
    ticks = process_start_ticks(child.pid)
    assert not stop_monitor(MonitorInfo(pid=child.pid, start_ticks=ticks, host="login2"))
    assert child.poll() is None
    assert stop_monitor(MonitorInfo(pid=child.pid, start_ticks=ticks, host=this_host()))
    assert child.wait(10) == -signal.SIGTERM
    assert not stop_monitor(MonitorInfo(pid=child.pid, start_ticks=ticks, host=this_host()))  # gone now
