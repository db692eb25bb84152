"""Upgrading with jobs in flight: monitor daemons of the previous jobmon (schema 1, commit 1b76492) keep
running while the new CLI reads and writes their files, on the real Slurm.

What is promised (core/state/migrate.py): the new CLI reads schema-1 files (upgraded in memory, not
rewritten); an old daemon tells its story to the end; a file the new CLI changes is written as
schema 2, and an old daemon that then reads it stops at its next poll (it refuses a newer schema),
after which `jobmon recover` would start a new daemon for the job.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import ROOT, _run_as, wait_job_state

#: The last jobmon of schema 1 (what was landed before the foundation issue).
PREVIOUS = "1b764928eee3"


@pytest.fixture(scope="module")
def old_app(base_dir):
    """The previous version's checkout, as its users have it on PATH."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{PREVIOUS}^{{commit}}"],
                                                     capture_output=True).returncode != 0:
        pytest.fail(f"the previous version ({PREVIOUS}) is not in this clone's history: clone without --depth")
    target = os.path.join(base_dir, "old-app")
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", ROOT, "archive", PREVIOUS], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    for folder, _subdirs, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
    return target


def old_jobmon(jm, old_app, *args: str, host: str = ""):
    argv = [os.path.join(old_app, "jobmon"), *args]
    if not host:
        return _run_as(jm.account, argv, jm.env, 60, cwd=jm.work)
    env = [f"{k}={v}" for k, v in {**jm.env, "HOME": jm.account.home, "PATH": "/usr/bin:/bin"}.items()]
    inner = ["runuser", "-u", jm.account.name, "--", "env", "-i", *env, *argv]
    return subprocess.run(["unshare", "--uts", "--", "sh", "-c", f'hostname {host} && cd "$0" && exec "$@"', jm.work,
                           *inner], capture_output=True, text=True, timeout=60)


def old_submit(jm, old_app, script: str, host: str = "") -> str:
    done = old_jobmon(jm, old_app, "submit", script, host=host)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split("Submitted batch job ", 1)[1].split()[0]


def job(jm, name: str, seconds: int) -> str:
    return jm.write_script(f"{name}.sbatch", f"#!/bin/bash\n#SBATCH -o {name}-%j.out\nsleep {seconds}\n")


def pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_an_old_daemon_tells_its_story_while_the_new_cli_reads_its_file(jm, old_app):
    job_id = old_submit(jm, old_app, job(jm, "old-ok", 5))
    jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 30, "the old daemon claimed the job")
    row = jm.status_row(job_id)  # the new CLI's first use of this folder builds its index
    assert row["monitor"] == "ALIVE", row
    state = jm.wait_state(job_id, lambda s: s.get("done"), 60, "the old daemon's story")  # schema 1 keeps `done`
    assert state["schema_version"] == 1 and state["notification"]["status"] == "sent"
    assert len(jm.receiver.messages()) == 1
    row = jm.status_row(job_id)
    assert (row["monitor"], row["notification"], row["state"]) == ("DONE", "sent", "COMPLETED")
    assert jm.state(job_id)["schema_version"] == 1  # reading never rewrites a record
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0 and "nothing to recover" in recovered.stdout
    time.sleep(1)
    assert len(jm.receiver.messages()) == 1


def test_a_new_cancel_stops_an_old_daemon_on_this_host(jm, old_app):
    job_id = old_submit(jm, old_app, job(jm, "old-cancel", 60))
    try:
        state = jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 30, "the old daemon claimed the job")
        assert jm.jobmon("cancel", job_id).returncode == 0
        assert pid_gone(state["monitor"]["pid"], 30), "the old daemon did not stop"
        after = jm.state(job_id)
        assert after["schema_version"] == 2 and after["monitor"]["stop_requested"]
        assert jm.status_row(job_id)["monitor"] == "CANCELLED"
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    assert jm.receiver.messages() == []


def test_an_old_daemon_elsewhere_stops_at_its_next_poll_once_the_new_cli_wrote_its_file(jm, old_app):
    job_id = old_submit(jm, old_app, job(jm, "old-remote", 60), host="login2")
    try:
        wait_job_state(job_id, ("RUNNING",), 30)
        state = jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0 and s["observation"]["state"] == "RUNNING",
                              30, "the old daemon (on login2) polled")
        assert state["monitor"]["host"] == "login2"
        assert jm.jobmon("cancel", job_id).returncode == 0  # cannot signal it: another host
        assert pid_gone(state["monitor"]["pid"], 30), "the old daemon did not stop at its next poll"
        log = jm.monitor_log(job_id)
        assert "schema version 2 is newer than this jobmon understands" in log, log
        assert json.loads(open(os.path.join(jm.home, "state", f"{job_id}.json")).read())["schema_version"] == 2
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
        for pid in _old_daemons(jm.home):
            os.kill(pid, signal.SIGKILL)
    assert jm.receiver.messages() == []


def _old_daemons(home: str):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if f"JOBMON_HOME={home}".encode() in handle.read():
                        yield int(entry)
            except OSError:
                continue
