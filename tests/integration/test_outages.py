"""Slurm's own daemons stopped under a job (slurmctld, slurmdbd): no false end, nothing lost, one message.

These tests stop a daemon every other test needs, so they run alone: this module is one xdist group
(one worker runs its tests one after the other) and holds the exclusive turn on the Slurm for all of
them at once (see `machine_lock` in conftest.py), while the other workers run unit tests.
"""
from __future__ import annotations

import subprocess
import time

import pytest
from conftest import is_done, machine_lock, slurm_local, wait_for_accounting, wait_job_state

pytestmark = [pytest.mark.alone, pytest.mark.xdist_group("slurm-outages")]


@pytest.fixture(scope="module", autouse=True)
def slurm_to_ourselves():
    with machine_lock("slurm", exclusive=True):
        yield
        wait_for_accounting()  # the next tests must not meet sacct still catching up after our restarts


def short_job(jm, name: str, seconds: int, extra: str = "") -> str:
    return jm.write_script(f"{name}.sbatch", f"#!/bin/bash\n#SBATCH -o {name}-%j.out\n{extra}sleep {seconds}\n")


def test_controller_outage_gives_no_false_end_then_the_right_one(jm):
    job_id = jm.submit(jm.write_script("c.sbatch", "#!/bin/bash\n#SBATCH -o c-%j.out\nsleep 20\n"))
    wait_job_state(job_id, ("RUNNING",), 30)
    slurm_local("stop-ctld")
    try:
        jm.wait_state(job_id, lambda s: s["observation"]["controller_down_since"] > 0, 30, "outage noticed")
        time.sleep(4)
        state = jm.state(job_id)
        assert state["final"] is None and not is_done(state)
        assert jm.receiver.messages() == []
    finally:
        slurm_local("start-ctld")
    state = jm.wait_done(job_id, timeout=90)
    assert state["final"]["state"] == "COMPLETED"
    assert [m["webhook"] for m in jm.receiver.messages()] == ["success"]


def test_job_ending_while_the_controller_is_down_is_reported_once_and_right(jm):
    job_id = jm.submit(short_job(jm, "end-down", 10))  # long enough that stopping slurmctld (seconds on a
    wait_job_state(job_id, ("RUNNING",), 30)               # loaded machine) surely comes before its end
    slurm_local("stop-ctld")
    try:
        time.sleep(14)  # the job ends in the dark
        state = jm.state(job_id)
        assert state["final"] is None and jm.receiver.messages() == []
        assert "controller unreachable" in jm.status_row(job_id)["problem"]
    finally:
        slurm_local("start-ctld")
    state = jm.wait_done(job_id, timeout=120)
    truth = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=State"], capture_output=True,
                           text=True).stdout.split()[0]
    assert state["final"]["state"] == truth.split()[0]
    assert len(jm.receiver.messages()) == 1


def test_sacct_down_briefly_at_the_end_still_gives_the_full_record(jm):
    job_id = jm.submit(short_job(jm, "dbd-short", 4, "echo 'FileNotFoundError: data.csv' >&2\n"))
    slurm_local("stop-dbd")  # at once: the job must not end before sacct is gone
    try:
        wait_job_state(job_id, ("COMPLETED",), 30)
        jm.wait_state(job_id, lambda s: s["observation"]["accounting_down_since"] > 0, 30, "sacct outage noticed")
        assert jm.state(job_id)["final"] is None
    finally:
        slurm_local("start-dbd")
    state = jm.wait_done(job_id, timeout=120)
    assert state["final"]["source"] == "sacct" and not state["final"]["incomplete"]
    assert state["final"]["state"] == "COMPLETED"
    assert len(jm.receiver.messages()) == 1


def test_sacct_down_past_the_wait_sends_what_squeue_knew_marked_incomplete(jm):
    jm.write_config(poll={"accounting_wait": 5})
    job_id = jm.submit(short_job(jm, "dbd-long", 4, "exit 4\n"))
    slurm_local("stop-dbd")  # at once: the job must not end before sacct is gone
    try:
        state = jm.wait_done(job_id, timeout=60)
    finally:
        slurm_local("start-dbd")
    assert state["final"]["incomplete"] and state["final"]["source"] == "squeue"
    assert state["final"]["state"] == "FAILED"
    message = jm.receiver.messages("error")[0]
    assert "never confirmed" in message["payload"]["embeds"][0]["description"]
    assert jm.status_row(job_id)["state"] == "FAILED (incomplete)"
