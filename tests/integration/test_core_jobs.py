"""Real jobs on the real local Slurm, monitored by jobmon running as a non-root user."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import notification, wait_job_state

CUDA_OOM_JOB = r"""#!/bin/bash
#SBATCH -J cuda-oom
#SBATCH -o train-%j.out
#SBATCH -e train-%j.err
echo "epoch 1 step 10 loss=0.53"
cat >&2 <<'EOF'
[rank0]: Traceback (most recent call last):
[rank0]:   File "/home/u/train.py", line 88, in <module>
[rank0]:     loss = model(batch).sum()
[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
capacity of 79.15 GiB of which 1.02 GiB is free.
EOF
exit 1
"""

OOM_JOB = r"""#!/bin/bash
#SBATCH -J hog
#SBATCH --mem=100M
#SBATCH -o hog-%j.out
python3 - <<'EOF'
import time
blocks = []
for _ in range(50):
    blocks.append(bytearray(10 * 1024 * 1024))
    time.sleep(0.05)
print("allocated 500 MB", flush=True)
time.sleep(5)
EOF
"""


def embed(message: dict) -> dict:
    """The embed with Discord's markdown escapes removed, as a reader sees it."""
    card = message["payload"]["embeds"][0]
    return json.loads(json.dumps(card).replace("\\\\", ""))


def test_completed_job_goes_to_the_success_channel(jm):
    script = jm.write_script("ok.sbatch", "#!/bin/bash\n#SBATCH -J ok-job\n#SBATCH -o ok-%j.out\necho hello\nsleep 1\n")
    job_id = jm.submit(script)
    state = jm.wait_done(job_id, timeout=60)
    assert state["final"]["state"] == "COMPLETED" and notification(state) == "sent"
    assert state["stdout_path"] == os.path.join(jm.work, f"ok-{job_id}.out")
    messages = jm.receiver.messages()
    assert [m["webhook"] for m in messages] == ["success"]
    assert messages[0]["query"].get("wait") == "true"
    card = embed(messages[0])
    assert job_id in card["title"] and "COMPLETED" in card["title"] and "ok-job" in card["title"]
    assert card["color"] == 0x2ECC71
    assert messages[0]["payload"]["allowed_mentions"] == {"parse": []}


def test_failed_job_with_cuda_oom_goes_to_the_error_channel(jm):
    job_id = jm.submit(jm.write_script("cuda.sbatch", CUDA_OOM_JOB))
    state = jm.wait_done(job_id)
    assert state["final"]["state"] == "FAILED" and state["final"]["exit_code"] == 1
    assert state["categories"][0] == "cuda_oom"
    assert state["stderr_path"].endswith(f"train-{job_id}.err")
    messages = jm.receiver.messages()
    assert [m["webhook"] for m in messages] == ["error"]
    text = json.dumps(embed(messages[0]))
    assert "cuda_oom" in text and "CUDA out of memory" in text


def test_real_out_of_memory_is_reported_as_slurm_oom(jm):
    job_id = jm.submit(jm.write_script("oom.sbatch", OOM_JOB))
    state = jm.wait_done(job_id, timeout=90)
    assert state["final"]["state"] == "OUT_OF_MEMORY", jm.monitor_log(job_id)
    assert "slurm_oom" in state["categories"]
    assert state["final"]["req_mem"] == "100M"
    card = embed(jm.receiver.messages("error")[0])
    assert "OUT_OF_MEMORY" in card["title"]


@pytest.mark.long_running  # Slurm's TIMEOUT comes 60-90 s after the start
def test_real_timeout(jm):
    script = jm.write_script("slow.sbatch", "#!/bin/bash\n#SBATCH -t 1\n#SBATCH -o slow-%j.out\nsleep 600\n")
    job_id = jm.submit(script)
    state = jm.wait_done(job_id, timeout=150)
    assert state["final"]["state"] == "TIMEOUT"
    assert "slurm_timeout" in state["categories"]
    message = jm.receiver.messages("error")[0]
    assert embed(message)["color"] == 0xE67E22


def test_scancel_is_reported_as_cancelled(jm):
    job_id = jm.submit(jm.write_script("long.sbatch", "#!/bin/bash\n#SBATCH -o long-%j.out\nsleep 300\n"))
    wait_job_state(job_id, ("RUNNING",), 30)
    done = jm.run("scancel", job_id)
    assert done.returncode == 0, done.stderr
    state = jm.wait_done(job_id, timeout=60)
    assert state["final"]["state"] == "CANCELLED"
    assert state["final"]["state_text"].startswith("CANCELLED by")
    assert [m["webhook"] for m in jm.receiver.messages()] == ["error"]


def test_watch_attaches_to_a_plain_sbatch_job(jm):
    script = jm.write_script("plain.sbatch", "#!/bin/bash\n#SBATCH -o plain-%j.log\nsleep 3\n"
                                             "echo 'No such file or directory: data.csv' >&2\nexit 2\n")
    done = jm.run("sbatch", "--parsable", script)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    watched = jm.jobmon("watch", job_id)
    assert watched.returncode == 0, watched.stderr
    state = jm.wait_done(job_id)
    assert state["source"] == "watch"
    assert state["stdout_path"] == os.path.join(jm.work, f"plain-{job_id}.log")
    assert state["final"]["state"] == "FAILED" and state["final"]["exit_code"] == 2
    assert len(jm.receiver.messages("error")) == 1
    again = jm.jobmon("watch", job_id)
    assert again.returncode != 0 and "already monitored" in again.stderr


def test_watch_of_a_finished_job_notifies_at_once(jm):
    done = jm.run("sbatch", "--parsable", "--wrap", "echo done", "-o", os.path.join(jm.work, "w-%j.out"))
    job_id = done.stdout.strip()
    wait_job_state(job_id, ("COMPLETED",), 30)
    watched = jm.jobmon("watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert "already ended" in watched.stdout and "sent" in watched.stdout
    assert [m["webhook"] for m in jm.receiver.messages()] == ["success"]


GONE_ARRAY = """#!/bin/bash
#SBATCH -J gone
#SBATCH --array=0-2
#SBATCH -o gone-%A_%a.out
[ "$SLURM_ARRAY_TASK_ID" = 1 ] && echo "ModuleNotFoundError: No module named 'wandb'" && exit 1
exit 0
"""


def test_watch_of_an_array_the_controller_forgot_gets_its_summary(jm):
    script = jm.write_script("gone.sbatch", GONE_ARRAY)
    done = jm.run("sbatch", "--parsable", script)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    deadline = time.monotonic() + 90
    while jm.run("squeue", "-h", "-j", job_id).returncode == 0:  # until squeue says "Invalid job id" (MinJobAge)
        assert time.monotonic() < deadline, "the array never left squeue"
        time.sleep(1)
    watched = jm.jobmon("watch", "--output", "gone-%A_%a.out", job_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "already ended" in watched.stdout and "sent" in watched.stdout
    state = jm.state(job_id)
    assert state["final"]["task_counts"] == {"COMPLETED": 2, "FAILED": 1}
    assert state["categories"][0] == "import_error"
    [message] = jm.receiver.messages()
    assert message["webhook"] == "error"
    assert embed(message)["title"] == f"Array {job_id} (gone): 2 COMPLETED, 1 FAILED"
    task = jm.jobmon("watch", f"{job_id}_1")  # its failed task, already told by the summary
    assert task.returncode == 0, task.stdout + task.stderr
    assert f"belongs to array {job_id}, which jobmon already summarised" in task.stdout
    assert "notification: sent" in task.stdout and "Nothing was sent" in task.stdout
    assert len(jm.receiver.messages()) == 1 and not os.path.exists(os.path.join(jm.home, "state", f"{job_id}_1.json"))


def test_watch_of_an_unknown_job_is_a_clear_error(jm):
    done = jm.jobmon("watch", "99999999")
    assert done.returncode != 0
    assert "unknown to Slurm" in done.stderr and "Traceback" not in done.stderr
    bad = jm.jobmon("watch", "12ab")
    assert bad.returncode != 0 and "is not a Slurm job id" in bad.stderr


def test_sbatch_rejection_passes_through_and_writes_nothing(jm):
    script = jm.write_script("x.sbatch", "#!/bin/bash\necho hi\n")
    done = jm.jobmon("submit", "--mem=abc", script)
    assert done.returncode != 0
    assert "sbatch: error" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(os.path.join(jm.home, "state")) == []


def test_killed_daemon_is_dead_then_recovered_with_one_notification(jm):
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "2"
    job_id = jm.submit(jm.write_script("k.sbatch", "#!/bin/bash\n#SBATCH -o k-%j.out\nsleep 6\n"))
    jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 20, "daemon claimed the job")
    os.kill(jm.daemon_pid(job_id), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads(jm.jobmon("status", "--json").stdout)
        row = [r for r in status["jobs"] if r["job_id"] == job_id][0]
        if row["monitor"] == "DEAD":
            break
        time.sleep(0.5)
    assert row["monitor"] == "DEAD"
    time.sleep(8)  # the job ends while nobody watches
    assert jm.receiver.messages() == []
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0 and job_id in recovered.stdout
    state = jm.wait_done(job_id)
    assert state["final"]["state"] == "COMPLETED"
    time.sleep(2)
    assert len(jm.receiver.messages()) == 1
    assert "nothing to recover" in jm.jobmon("recover").stdout


def test_two_recovers_at_once_start_one_daemon(jm):
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    job_id = jm.submit(jm.write_script("r.sbatch", "#!/bin/bash\n#SBATCH -o r-%j.out\nsleep 8\n"))
    jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 20, "daemon claimed the job")
    os.kill(jm.daemon_pid(job_id), signal.SIGKILL)
    time.sleep(4)
    command = [os.path.join(jm.app, "jobmon"), "recover"]
    procs = [subprocess.Popen(["runuser", "-u", jm.account.name, "--", "env", "-i",
                               *[f"{k}={v}" for k, v in {**jm.env, "HOME": jm.account.home,
                                                         "PATH": "/usr/bin:/bin"}.items()], *command],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             if not jm.account.is_self else subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                                               env={**os.environ, **jm.env})
             for _ in range(4)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    restarted = [o for o in outputs if "monitor restarted" in o]
    assert len(restarted) == 1, outputs
    jm.wait_done(job_id)
    time.sleep(2)
    assert len(jm.receiver.messages()) == 1


def test_rate_limited_webhook_delivers_once(jm):
    jm.receiver.enqueue(("ratelimit", 1.5))
    job_id = jm.submit(jm.write_script("rl.sbatch", "#!/bin/bash\n#SBATCH -o rl-%j.out\necho ok\n"))
    state = jm.wait_done(job_id)
    assert notification(state) == "sent"
    hits = jm.receiver.hits()
    assert [h["result"] for h in hits] == ["ratelimit 1.5s", "accepted"]
    assert len(jm.receiver.messages()) == 1


def test_daemon_survives_the_hangup_of_its_session(jm):
    script = jm.write_script("hup.sbatch", "#!/bin/bash\n#SBATCH -o hup-%j.out\nsleep 5\n")
    jobmon = os.path.join(jm.app, "jobmon")
    shell = ["bash", "-c", f"cd {jm.work} && {jobmon} submit {script} && sleep 60"]
    # A login session: its own process group, killed with SIGHUP like a dropped SSH connection. In a real
    # session SIGHUP has its default action; a test runner started under nohup (or by a CI agent) ignores
    # it, and an ignored signal stays ignored across exec, so the session would never hang up: reset it.
    if jm.account.is_self:
        argv, env = ["env", "--default-signal=HUP", *shell], {**os.environ, **jm.env}
    else:
        user_env = {**jm.env, "HOME": jm.account.home, "PATH": "/usr/bin:/bin"}
        argv = ["runuser", "-u", jm.account.name, "--", "env", "-i", "--default-signal=HUP",
                *[f"{k}={v}" for k, v in user_env.items()], *shell]
        env = None
    session = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        line = session.stdout.readline()
        job_id = line.split("Submitted batch job ", 1)[1].split()[0]
        jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 20, "daemon claimed the job")
        os.killpg(session.pid, signal.SIGHUP)
        session.wait(timeout=10)
    finally:
        if session.poll() is None:
            os.killpg(session.pid, signal.SIGKILL)
            session.wait()
        session.stdout.close()
    assert session.returncode in (128 + signal.SIGHUP, -signal.SIGHUP)  # runuser reports 129, bash dies of it
    state = jm.wait_done(job_id)
    assert state["final"]["state"] == "COMPLETED"
    assert len(jm.receiver.messages()) == 1


def test_status_shows_jobs_and_an_unreadable_file(jm):
    script = jm.write_script("s.sbatch", "#!/bin/bash\n#SBATCH -J status-job\n#SBATCH -o s-%j.out\nsleep 30\n")
    job_id = jm.submit(script)
    jm.wait_state(job_id, lambda s: s["observation"]["state"] == "RUNNING", 30, "RUNNING seen")
    broken = os.path.join(jm.home, "state", "123456.json")  # a current record (indexed) whose file got damaged
    with open(broken, "w") as handle:
        handle.write('{"job_id": "123456", "monit')
    open(os.path.join(jm.home, "state", "active", "123456"), "w").close()
    done = jm.jobmon("status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["JOB", "NAME", "STATE", "PROGRESS", "MONITOR"]
    row = [line for line in lines if line.startswith(job_id)][0]
    assert "status-job" in row and "RUNNING" in row and "ALIVE" in row
    assert any(line.startswith("123456") and "UNREADABLE" in line for line in lines)
    cancelled = jm.jobmon("cancel", job_id)
    assert cancelled.returncode == 0 and "keeps running" in cancelled.stdout
    jm.wait_state(job_id, lambda s: s["monitor"]["stop_requested"], 10, "stop requested")
    time.sleep(2)
    assert wait_job_state(job_id, ("RUNNING",), 5) == "RUNNING"
    jm.run("scancel", job_id)
    assert jm.receiver.messages() == []


def test_test_discord_reports_each_channel(jm):
    done = jm.jobmon("test-discord")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "success: OK" in done.stdout and "error: OK" in done.stdout
    assert len(jm.receiver.messages()) == 2
    jm.receiver.delete_webhook("error")
    failed = jm.jobmon("test-discord")
    assert failed.returncode != 0
    assert "error: FAILED" in failed.stdout and "404" in failed.stdout
    token = jm.receiver.webhook_url("error").rsplit("/", 1)[1]
    assert token not in failed.stdout + failed.stderr
