"""Faults injected into the real Slurm, the receiver, the daemons and the disk: nothing lost, nothing false."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

from conftest import is_done, notification, wait_job_state


def short_job(jm, name: str, seconds: int, extra: str = "") -> str:
    return jm.write_script(f"{name}.sbatch", f"#!/bin/bash\n#SBATCH -o {name}-%j.out\n{extra}sleep {seconds}\n")


def test_webhook_errors_and_a_hang_end_in_exactly_one_message(jm):
    jm.receiver.enqueue(("status", 500), ("status", 502), ("hang", 15.0))
    job_id = jm.submit(short_job(jm, "flaky-hook", 1))
    state = jm.wait_done(job_id, timeout=90)
    assert notification(state) == "sent"
    assert [h["result"] for h in jm.receiver.hits()][:3] == ["status 500", "status 502", "hang 15s"]
    time.sleep(1)
    assert len(jm.receiver.messages()) == 1


def test_deleted_webhook_stops_retries_shows_in_status_and_recover_delivers_after_the_fix(jm):
    jm.receiver.delete_webhook("success")
    job_id = jm.submit(short_job(jm, "gone-hook", 1))
    state = jm.wait_done(job_id, timeout=60)
    assert notification(state) == "gone"
    hits = len(jm.receiver.hits())
    time.sleep(3)
    assert len(jm.receiver.hits()) == hits  # no retries against a deleted webhook
    row = jm.status_row(job_id)
    assert row["notification"] == "gone" and "webhook gone" in row["problem"]
    jm.write_config(discord={"success_webhook": jm.receiver.webhook_url("replacement")})
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0 and "re-sending" in recovered.stdout
    jm.wait_state(job_id, lambda s: notification(s) == "sent", 30, "delivered after the fix")
    assert len(jm.receiver.messages("replacement")) == 1


def test_daemon_killed_mid_send_leaves_a_pending_notification_that_recover_delivers_once(jm):
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    jm.receiver.enqueue(("hang", 30.0))
    job_id = jm.submit(short_job(jm, "kill-send", 1))
    jm.wait_state(job_id, lambda s: notification(s) == "sending", 30, "sending")
    os.kill(jm.daemon_pid(job_id), signal.SIGKILL)
    state = jm.state(job_id)
    assert state["final"]["state"] == "COMPLETED" and not is_done(state)
    jm.wait_state(job_id, lambda s: jm.status_row(job_id)["monitor"] == "DEAD", 400, "DEAD")
    assert "not delivered" in jm.status_row(job_id)["problem"]
    assert jm.receiver.messages() == []
    recovered = jm.jobmon("recover")
    assert "delivering its pending notification" in recovered.stdout, recovered.stdout
    jm.wait_done(job_id, timeout=30)
    time.sleep(1)
    assert len(jm.receiver.messages()) == 1


def test_random_sigkills_never_corrupt_state_and_the_story_is_told_once(jm):
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    job_id = jm.submit(short_job(jm, "chaos", 12))
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = jm.state(job_id)  # must always parse: writes are atomic
        if is_done(state):
            break
        pid = state["monitor"]["pid"]
        if pid > 0 and kills < 6:
            time.sleep(rng.uniform(0.0, 1.5))
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
            time.sleep(2.2)  # past the heartbeat grace: the monitor is DEAD
            jm.jobmon("recover")
        time.sleep(0.3)
    state = jm.wait_done(job_id, timeout=60)
    assert kills >= 3
    assert state["final"]["state"] == "COMPLETED"
    time.sleep(1)
    assert len(jm.receiver.messages()) == 1
    assert not [n for n in os.listdir(os.path.join(jm.home, "state")) if n.startswith(".tmp-")]


def test_cancel_during_a_send_sends_nothing_twice(jm):
    jm.receiver.enqueue(("hang", 4.0))
    job_id = jm.submit(short_job(jm, "cancel-send", 1))
    jm.wait_state(job_id, lambda s: notification(s) == "sending", 30, "sending")
    assert jm.jobmon("cancel", job_id).returncode == 0
    time.sleep(15)
    assert len(jm.receiver.messages()) <= 1
    assert jm.status_row(job_id)["monitor"] == "CANCELLED"


REQUEUE_JOB = """#!/bin/bash
#SBATCH -o rq-%j.out
#SBATCH --requeue
echo "run $SLURM_RESTART_COUNT"
sleep 6
[ "$SLURM_RESTART_COUNT" = 1 ] && echo 'Segmentation fault (core dumped)' >&2
exit 0
"""


def test_requeued_job_is_reported_once_with_the_log_of_its_last_run(jm):
    script = jm.write_script("requeue.sbatch", REQUEUE_JOB)
    job_id = jm.submit(script)
    wait_job_state(job_id, ("RUNNING",), 30)
    time.sleep(1)
    requeued = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    wait_job_state(job_id, ("PENDING",), 30)
    started = subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    state = jm.wait_done(job_id, timeout=90)
    assert state["final"]["state"] == "COMPLETED"
    # only the second run printed it, so its log was analysed; a clean exit 0 makes it a warning seen, no cause
    assert state["categories"] == [] and [w["category"] for w in state["warnings"]] == ["segfault"]
    with open(os.path.join(jm.work, f"rq-{job_id}.out")) as handle:
        assert handle.read().startswith("run 1")
    assert len(jm.receiver.messages()) == 1


def _as_other_host(jm, *args: str):
    """Run jobmon in a UTS namespace whose host name is login2: a second login node on shared $HOME."""
    env = [f"{k}={v}" for k, v in {**jm.env, "HOME": jm.account.home, "PATH": "/usr/bin:/bin"}.items()]
    inner = ["runuser", "-u", jm.account.name, "--", "env", "-i", *env, os.path.join(jm.app, "jobmon"), *args]
    return subprocess.run(["unshare", "--uts", "--", "sh", "-c", 'hostname login2 && exec "$@"', "sh", *inner],
                          capture_output=True, text=True, timeout=60)


def test_a_monitor_alive_on_another_host_is_not_dead_and_not_duplicated(jm):
    job_id = jm.submit(short_job(jm, "two-hosts", 10))
    jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 20, "daemon claimed the job")
    seen = json.loads(_as_other_host(jm, "status", "--json").stdout)
    row = [r for r in seen["jobs"] if r["job_id"] == job_id][0]
    assert row["monitor"] == "ALIVE" and row["host"] != "login2"
    recovered = _as_other_host(jm, "recover")
    assert recovered.returncode == 0 and "restarted" not in recovered.stdout
    jm.wait_done(job_id, timeout=60)
    time.sleep(1)
    assert len(jm.receiver.messages()) == 1


def test_read_only_state_folder_does_not_stop_the_notification(jm):
    job_id = jm.submit(short_job(jm, "ro-state", 4))
    jm.wait_state(job_id, lambda s: s["observation"]["state"] == "RUNNING", 30, "RUNNING seen")
    state_dir = os.path.join(jm.home, "state")
    os.chmod(state_dir, 0o500)
    try:
        jm.receiver.wait_for(1, timeout=60)
        log = jm.monitor_log(job_id)
        assert "keeping the record in memory" in log
    finally:
        os.chmod(state_dir, 0o700)
    time.sleep(2)
    assert len(jm.receiver.messages()) == 1
    assert not [n for n in os.listdir(state_dir) if n.startswith(".tmp-")]


def test_hostile_logs_cost_bounded_time_and_memory(jm):
    script = jm.write_script("hostile.sbatch", r"""#!/bin/bash
#SBATCH -o hostile-%j.out
#SBATCH -e hostile-%j.err
truncate -s 5G hostile-$SLURM_JOB_ID.err                      # a 5 GB stderr (sparse)
head -c 50000000 /dev/zero | tr '\0' 'x' >> hostile-$SLURM_JOB_ID.err   # one 50 MB line
printf '\n\xff\xfe garbage \x00\x01\x02\n' >> hostile-$SLURM_JOB_ID.err
head -c 20000 /dev/urandom >> hostile-$SLURM_JOB_ID.err
printf '\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB\n' >> hostile-$SLURM_JOB_ID.err
echo 'about to vanish' > gone-$SLURM_JOB_ID.log
exit 1
""")
    job_id = jm.submit(script)
    state = jm.wait_done(job_id, timeout=90)
    assert state["final"]["state"] == "FAILED"
    assert state["categories"][0] == "cuda_oom"
    embed = jm.receiver.messages("error")[0]["payload"]["embeds"][0]
    assert jm.receiver.rejected() == []  # the receiver checks Discord's limits
    assert "CUDA out of memory" in embed["description"]
    os.remove(os.path.join(jm.work, f"hostile-{job_id}.err"))


def test_deleted_log_is_no_crash(jm):
    script = jm.write_script("vanish.sbatch", "#!/bin/bash\n#SBATCH -o vanish-%j.out\necho hi\n"
                                              "rm -f vanish-$SLURM_JOB_ID.out\nexit 2\n")
    job_id = jm.submit(script)
    state = jm.wait_done(job_id, timeout=60)
    assert state["final"]["state"] == "FAILED" and state["categories"] == []
    assert len(jm.receiver.messages("error")) == 1
