"""While the job runs, on the real Slurm: progress and ETA from a real tqdm bar, a stall and its end, a hang
signature, a time limit the progress will not make."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from conftest import squeue_state, wait_job_state

tqdm = pytest.importorskip("tqdm")  # scripts/test.sh installs it into the test venv

#: A real tqdm bar on stderr: 100 steps of 0.4 s. Each step is also written to a side file, so the test
#: knows the truth when it reads `status`.
TQDM_JOB = r"""#!/bin/bash
#SBATCH -J tqdm-train
#SBATCH -o tqdm-%j.out
#SBATCH -e tqdm-%j.err
PYTHONPATH="$PWD/pylib" python3 - <<'EOF'
import time
from tqdm import tqdm
for step in tqdm(range(100), desc="train", mininterval=0):
    time.sleep(0.4)
    with open("steps.txt", "w") as f:
        f.write(f"{step + 1} {time.time()}")
EOF
"""

#: Ten steps a second apart, then 30 s without a sign of life, then five more steps.
STALL_JOB = r"""#!/bin/bash
#SBATCH -J stall-train
#SBATCH -o stall-%j.out
for i in $(seq 1 10); do echo "step $i/15 loss=0.5"; sleep 1; done
sleep 30
for i in $(seq 11 15); do echo "step $i/15 loss=0.4"; sleep 1; done
"""

#: PyTorch's NCCL watchdog line as torch 2.x prints it (copied from a real log pasted in a public issue),
#: then a hang.
WATCHDOG_LINE = (
    "[rank1]:[E1003 18:37:01.832146912 ProcessGroupNCCL.cpp:607] [Rank 1] Watchdog caught collective operation "
    "timeout: WorkNCCL(SeqNum=6463, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=1800000) ran for 1800017 "
    "milliseconds before timing out."
)
HANG_JOB = f"""#!/bin/bash
#SBATCH -J hang-train
#SBATCH -o hang-%j.out
echo "step 3/100"
cat >&2 <<'EOF'
{WATCHDOG_LINE}
EOF
sleep 300
"""

#: 1 % every 2 s: 200 s of work under a 2-minute limit.
SLOW_JOB = r"""#!/bin/bash
#SBATCH -J slow-train
#SBATCH -t 2
#SBATCH -o slow-%j.out
for i in $(seq 1 100); do echo "step $i/100"; sleep 2; done
"""


def title(message) -> str:
    """The embed's title as a reader sees it (Discord's markdown escapes removed)."""
    return message["payload"]["embeds"][0]["title"].replace("\\", "")


def kinds(messages):
    """The event kind of each message, from its title."""
    found = []
    for message in messages:
        title_text = title(message)
        for word in ("stalled", "resumed", "looks hung", "time limit", "COMPLETED", "TIMEOUT", "CANCELLED"):
            if word in title_text:
                found.append(word)
                break
        else:
            found.append(title_text)
    return found


def test_a_tqdm_bar_gives_progress_and_an_eta_that_contains_the_real_end(jm):
    shutil.copytree(os.path.dirname(tqdm.__file__), os.path.join(jm.work, "pylib", "tqdm"))
    job_id = jm.submit(jm.write_script("tqdm.sbatch", TQDM_JOB))
    wait_job_state(job_id, ("RUNNING",), 60)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < 3:
        row = jm.status_row(job_id)
        truth = _steps_done(jm)
        progress = row["progress"]
        if progress and progress["eta_seconds"] is not None and 20 <= truth <= 85:
            now = time.time()
            seen.append((truth, progress, now))
        time.sleep(2)
    assert seen, f"no progress with an ETA in status while it ran: {jm.status_row(job_id)}"
    for truth, progress, _ in seen:
        assert abs(progress["fraction"] - truth / 100) <= 0.1, (truth, progress)
        assert progress["total"] == 100 and progress["source"] == "tqdm"
    jm.wait_done(job_id, timeout=60)
    real_end = float(open(os.path.join(jm.work, "steps.txt")).read().split()[1])
    for _, progress, at in seen:
        assert at + progress["eta_low_seconds"] - 2 <= real_end <= at + progress["eta_high_seconds"] + 2, progress


def _steps_done(jm) -> int:
    try:
        with open(os.path.join(jm.work, "steps.txt"), encoding="utf-8") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def test_a_stall_is_said_once_and_so_is_its_end(jm):
    jm.write_config(health={"stall_floor": 5, "stall_factor": 3, "stall_cap": 12})
    job_id = jm.submit(jm.write_script("stall.sbatch", STALL_JOB))
    stalled = jm.receiver.wait_for(1, timeout=60, webhook="error")
    assert kinds(stalled) == ["stalled"] and squeue_state(job_id) == "RUNNING"
    assert "STALLED" in jm.status_row(job_id)["flags"]
    jm.wait_done(job_id, timeout=90)
    assert kinds(jm.receiver.messages("error")) == ["stalled", "resumed"]
    assert kinds(jm.receiver.messages("success")) == ["COMPLETED"]
    card = jm.receiver.messages("error")[0]["payload"]["embeds"][0]
    assert "No progress for" in card["description"] and "step 10/15" in json.dumps(card)


def test_a_hang_signature_alerts_while_the_job_still_runs(jm):
    job_id = jm.submit(jm.write_script("hang.sbatch", HANG_JOB))
    alert = jm.receiver.wait_for(1, timeout=60, webhook="error")
    assert kinds(alert) == ["looks hung"] and "nccl_timeout" in title(alert[0])
    assert squeue_state(job_id) == "RUNNING"
    assert "HUNG" in jm.status_row(job_id)["flags"]
    assert jm.jobmon("cancel", "--job", job_id).returncode == 0  # the job itself would sleep on for minutes


@pytest.mark.long_running  # Slurm's TIMEOUT comes 2-3 minutes after the start
def test_progress_that_will_not_make_the_time_limit_is_warned_once_before_the_timeout(jm):
    jm.write_config(health={"time_limit_warn": []})
    job_id = jm.submit(jm.write_script("slow.sbatch", SLOW_JOB))
    warning = jm.receiver.wait_for(1, timeout=100, webhook="error")
    assert kinds(warning) == ["time limit"] and squeue_state(job_id) == "RUNNING"
    assert "after its time limit" in title(warning[0])
    state = jm.wait_done(job_id, timeout=200)
    assert state["final"]["state"] == "TIMEOUT"
    assert kinds(jm.receiver.messages("error")) == ["time limit", "TIMEOUT"]


STEPS_JOB = r"""#!/bin/bash
#SBATCH -J watch-me
#SBATCH -o steps-%j.out
for i in $(seq 1 120); do echo "step $i/120"; sleep 1; done
"""


def test_status_watch_under_tmux_shows_the_bar_the_detail_and_quits_cleanly(jm):
    job_id = jm.submit(jm.write_script("steps.sbatch", STEPS_JOB))
    jm.wait_state(job_id, lambda state: ((state.get("live") or {}).get("reading") or {}).get("done", 0) >= 12, 60,
                  "progress at 10 %")
    socket = f"jobmon-test-{job_id}"

    def tmux(*args: str) -> str:
        done = jm.run("tmux", "-L", socket, *args, timeout=20)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen_with(text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = tmux("capture-pane", "-p", "-t", "watch")
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never showed; the screen:\n{shown}")

    tmux("new-session", "-d", "-s", "watch", "-x", "100", "-y", "30", "bash --norc --noprofile")
    try:
        tmux("send-keys", "-t", "watch", f"{jm.app}/jobmon status --watch --interval 1", "Enter")
        listing = screen_with(job_id)
        row = next(line for line in listing.splitlines() if job_id in line)
        assert "watch-me" in row and "RUNNING" in row and "%" in row and "#" in row, listing
        tmux("send-keys", "-t", "watch", "Enter")
        detail = screen_with("progress history")
        assert f"{job_id}" in detail and "step " in detail, detail
        tmux("send-keys", "-t", "watch", "q")
        tmux("send-keys", "-t", "watch", "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' + ; echo",
             "Enter")
        sane = screen_with("icanon+echo+")
        assert "Traceback" not in sane
    finally:
        jm.run("tmux", "-L", socket, "kill-server", timeout=20)
        jm.jobmon("cancel", "--job", job_id)
