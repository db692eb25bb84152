"""Resources while the job runs, on the real Slurm (issue 11 parts 1-2): memory near the request from the
real sstat, checkpoints that stop appearing, a filling disk (a tmpfs mounted here), and sstat missing
(no false warning, `status` says why)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest
from conftest import squeue_state, wait_job_state

#: Touches MB MiB (so they count in RSS) and then sleeps S seconds.
HOLD = r"""import sys, time
b = bytearray(int(sys.argv[1]) * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
print("holding", sys.argv[1], "MiB", flush=True)
time.sleep(int(sys.argv[2]))
"""

MEMORY_JOB = r"""#!/bin/bash
#SBATCH -J mem-hold
#SBATCH --mem=400M
#SBATCH -t 2
#SBATCH -o mem-%j.out
python3 hold.py 340 40
"""

#: Five checkpoints a second apart, then nothing for a long while.
CHECKPOINT_JOB = r"""#!/bin/bash
#SBATCH -J ckpt-train
#SBATCH -t 2
#SBATCH -o ckpt-%j.out
mkdir -p ckpt
for i in 1 2 3 4 5; do head -c 1000 /dev/zero > ckpt/epoch$i.pt; echo "saved epoch $i"; sleep 1; done
sleep 60
"""

#: Fills its working directory (a 4 MiB tmpfs) to ~3.3 MiB, then waits.
DISK_JOB = r"""#!/bin/bash
#SBATCH -J disk-fill
#SBATCH -t 2
head -c 3400000 /dev/zero > big.bin
echo filled
sleep 40
"""


def titles(messages):
    return [m["payload"]["embeds"][0]["title"].replace("\\", "") for m in messages]


def _hold_script(jm) -> None:
    path = os.path.join(jm.work, "hold.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HOLD)
    os.chown(path, jm.account.uid, jm.account.gid)


def test_memory_near_the_request_is_warned_once_while_the_job_runs(jm):
    jm.write_config(health={"memory_warn": "80%", "sstat_interval": 2})
    _hold_script(jm)
    job_id = jm.submit(jm.write_script("mem.sbatch", MEMORY_JOB))
    warning = jm.receiver.wait_for(1, timeout=60, webhook="error")
    assert squeue_state(job_id) == "RUNNING"
    (title,) = titles(warning)
    assert "approaching memory limit" in title and "of 400M" in title, title
    share = int(title.split("(")[-1].split(" %")[0])
    assert 80 <= share <= 95, title  # 340 MiB + the interpreter of 400 MiB
    assert "--mem" in warning[0]["payload"]["embeds"][0]["description"]
    row = jm.status_row(job_id)
    usage = row["usage"]
    assert "MEM!" in row["flags"]
    assert usage["req_mem_bytes"] == 400 * 1024 ** 2 and usage["error"] is None, usage
    assert 0.8 <= usage["memory_fraction"] <= 0.95 and usage["max_rss_bytes"] >= 340 * 1024 ** 2, usage
    assert usage["gpu_util_percent"] is None  # 22.05 accounts no GPU
    # CPU use needs a run time: a look made while squeue still said 0:00 leaves it unknown until the next
    deadline = time.monotonic() + 30
    while jm.status_row(job_id)["usage"]["cpu_fraction"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jm.status_row(job_id)["usage"]["cpu_fraction"] is not None
    time.sleep(5)  # more looks above the threshold: still one warning
    assert titles(jm.receiver.messages("error")) == [title]
    assert jm.jobmon("cancel", "--job", job_id).returncode == 0


def test_checkpoints_that_stop_appearing_are_warned_once(jm):
    jm.write_config(health={"checkpoint_stale_after": "8s", "sstat_interval": 1})
    job_id = jm.submit("--watch-files", "ckpt/*.pt", jm.write_script("ckpt.sbatch", CHECKPOINT_JOB))
    ages = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not jm.receiver.messages("error"):
        files = jm.status_row(job_id)["files"]
        if files and files["count"] == 5:
            ages.append(files["newest_age_seconds"])
        time.sleep(1)
    stale = jm.receiver.messages("error")
    assert len(stale) == 1 and "no new checkpoint for" in titles(stale)[0], titles(stale)
    assert squeue_state(job_id) == "RUNNING"
    assert "epoch5.pt" in stale[0]["payload"]["embeds"][0]["description"]
    assert len(ages) >= 2 and ages[-1] > ages[0], ages  # the newest file's age grows
    row = jm.status_row(job_id)
    assert "CKPT-stale" in row["flags"] and row["files"]["total_bytes"] == 5000
    time.sleep(3)  # more looks: still one warning
    assert len(jm.receiver.messages("error")) == 1
    assert jm.jobmon("cancel", "--job", job_id).returncode == 0


@pytest.fixture
def small_disk(jm):
    """A 4 MiB tmpfs owned by the test user, as a job's working directory."""
    folder = tempfile.mkdtemp(prefix="small-", dir=jm.work)
    os.chmod(folder, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=4m,mode=0755,uid={jm.account.uid},gid={jm.account.gid}",
                    "tmpfs", folder], check=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], timeout=30, check=False)


def test_a_filling_disk_under_the_job_is_warned_once(jm, small_disk):
    jm.write_config(health={"disk_free_warn": ["20%"], "sstat_interval": 1})
    job_id = jm.submit("-D", small_disk, jm.write_script("disk.sbatch", DISK_JOB))
    warning = jm.receiver.wait_for(1, timeout=60, webhook="error")
    assert squeue_state(job_id) == "RUNNING"
    (title,) = titles(warning)
    assert f"low disk space on {small_disk}" in title, title
    assert "DISK!" in jm.status_row(job_id)["flags"]
    time.sleep(3)
    assert len(jm.receiver.messages("error")) == 1
    assert jm.jobmon("cancel", "--job", job_id).returncode == 0


def _path_without_sstat(jm) -> str:
    """A PATH with every command of /usr/local/bin and /usr/bin except sstat (a login node without it)."""
    folder = os.path.join(jm.work, "bin-no-sstat")
    os.makedirs(folder)
    for source in ("/usr/local/bin", "/usr/bin"):
        for name in os.listdir(source):
            target = os.path.join(folder, name)
            if name != "sstat" and not os.path.exists(target):
                os.symlink(os.path.join(source, name), target)
    os.chmod(folder, 0o755)
    return folder


def test_without_sstat_there_is_no_false_warning_and_status_says_why(jm):
    jm.write_config(health={"memory_warn": "80%", "sstat_interval": 1})
    _hold_script(jm)
    env = {"PATH": _path_without_sstat(jm)}
    done = jm.jobmon("submit", jm.write_script("mem.sbatch", MEMORY_JOB), extra_env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("Submitted batch job ", 1)[1].split()[0]
    wait_job_state(job_id, ("RUNNING",), 60)
    row = jm.wait_state(job_id, lambda s: ((s.get("live") or {}).get("usage") or {}).get("error"), 30,
                        "a usage error recorded")
    assert "sstat" in row["live"]["usage"]["error"] and "not on PATH" in row["live"]["usage"]["error"]
    status = jm.status_row(job_id)
    assert "usage unknown" in status["problem"] and "sstat" in status["problem"], status
    assert status["usage"]["memory_fraction"] is None and "MEM!" not in status["flags"]
    time.sleep(5)
    assert jm.receiver.messages("error") == []
    assert jm.jobmon("cancel", "--job", job_id).returncode == 0


SLEEP_JOB = r"""#!/bin/bash
#SBATCH -J sleepy
#SBATCH -t 2
#SBATCH -o sleepy-%j.out
sleep 60
"""


def test_two_monitors_share_one_sstat_per_interval(jm):
    """Each snapshot of state/sstat.snapshot.json is one sstat call; once both jobs run, one call per
    sstat_interval answers both monitors (two monitors on their own would make two)."""
    jm.write_config(health={"sstat_interval": 10})
    script = jm.write_script("sleepy.sbatch", SLEEP_JOB)
    jobs = [jm.submit(script), jm.submit(script)]
    for job_id in jobs:
        wait_job_state(job_id, ("RUNNING",), 60)
    snapshot = os.path.join(jm.home, "state", "sstat.snapshot.json")
    calls = set()
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        try:
            with open(snapshot, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            data = {}
        if set(jobs) <= set(data.get("queried", [])):
            assert data["error"] == "" and all(f"{job}.batch|" in data["text"] for job in jobs), data
            calls.add(data["taken_at"])
        time.sleep(0.2)
    assert 2 <= len(calls) <= 5, sorted(calls)  # 35 s at one call per 10 s (separate monitors: twice that)
    gaps = [b - a for a, b in zip(sorted(calls), sorted(calls)[1:])]
    assert all(gap >= 9.5 for gap in gaps), gaps
    for job_id in jobs:
        usage = jm.status_row(job_id)["usage"]
        assert usage["error"] is None and usage["max_rss_bytes"] and usage["req_mem_bytes"] == 1024 ** 3, usage
        assert jm.jobmon("cancel", "--job", job_id).returncode == 0


SHORT_JOB = r"""#!/bin/bash
#SBATCH -J gpu-less
#SBATCH -t 1
#SBATCH -o gpu-less-%j.out
sleep 12
"""


def test_gpu_query_srun_without_a_gpu_is_silent_and_tried_once(jm):
    """No GPU and no nvidia-smi here: the real `srun --overlap` step fails (exit 2); nothing is said, GPU use
    stays unknown, the job's own end is untouched, and the failing step is not repeated."""
    jm.write_config(health={"gpu_query": "srun", "sstat_interval": 2})
    job_id = jm.submit(jm.write_script("gpuless.sbatch", SHORT_JOB))
    state = jm.wait_done(job_id, timeout=90)
    assert state["final"]["state"] == "COMPLETED"
    assert jm.receiver.messages("error") == [] and len(jm.receiver.messages("success")) == 1
    usage = state["live"]["usage"]
    assert usage["gpu_util_percent"] is None and usage["gpu_srun_failed"] is True and usage["error"] == ""
    steps = subprocess.run(["sacct", "-n", "-P", "-j", job_id, "--format=JobID,State"], capture_output=True,
                           text=True, timeout=60).stdout.split()
    assert [row for row in steps if row.startswith(f"{job_id}.0|")] and not [
        row for row in steps if row.startswith(f"{job_id}.1|")], steps  # one srun step, not one per look
