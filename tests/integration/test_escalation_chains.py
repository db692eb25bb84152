"""Automatic resubmission on the real Slurm: OOM and TIMEOUT escalate, the chain ends with one summary."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import USER_PATH

HUNGRY_JOB = r"""#!/bin/bash
#SBATCH -J hungry
#SBATCH -o hungry-%j.out
python3 - <<'EOF'
import time
blocks = []
for _ in range({mb} // 10):
    blocks.append(bytearray(10 * 1024 * 1024))
    time.sleep(0.02)
print("got {mb} MB", flush=True)
time.sleep(4)
EOF
"""


def hungry(jm, mb: int) -> str:
    return jm.write_script(f"hungry{mb}.sbatch", HUNGRY_JOB.replace("{mb}", str(mb)))


def ladder_file(jm, levels) -> str:
    path = os.path.join(jm.work, "ladder.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(levels, handle)
    os.chmod(path, 0o644)
    return path


def comments() -> list:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "jobmon-chain:" in line]


def test_oom_on_the_first_level_is_resubmitted_with_the_next_and_completes(jm):
    ladder = ladder_file(jm, [{"mem": "100M"}, {"mem": "500M"}])
    job_id = jm.submit("--escalate", "--ladder", ladder, hungry(jm, 250))
    state = jm.wait_done(job_id, timeout=120)
    attempts = state["chain"]["attempts"]
    assert [a["state"] for a in attempts] == ["OUT_OF_MEMORY", "COMPLETED"], jm.monitor_log(job_id)
    assert [a["resources"]["mem"] for a in attempts] == ["100M", "500M"]
    second = attempts[1]["job_id"]
    req_mem = subprocess.run(["sacct", "-X", "-n", "-P", "-j", second, "--format=ReqMem"], capture_output=True,
                             text=True).stdout.strip()
    assert req_mem == "500M"
    errors, successes = jm.receiver.messages("error"), jm.receiver.messages("success")
    assert len(errors) == 1 and len(successes) == 1
    step = errors[0]["payload"]["embeds"][0]["title"].replace("\\", "")
    assert f"Job {job_id} (hungry) OUT_OF_MEMORY at 100M → resubmitted as {second} with 500M" == step
    final = successes[0]["payload"]["embeds"][0]
    assert final["title"].replace("\\", "").startswith(f"Chain {job_id} (hungry): COMPLETED after 2 attempts")
    report = jm.jobmon("report", "--csv", second)
    assert report.returncode == 0 and len(report.stdout.splitlines()) == 3 and "OUT_OF_MEMORY" in report.stdout


def test_default_ladder_doubles_memory(jm):
    job_id = jm.submit("--escalate", "--mem=100M", hungry(jm, 150))
    state = jm.wait_done(job_id, timeout=120)
    attempts = state["chain"]["attempts"]
    assert [a["state"] for a in attempts] == ["OUT_OF_MEMORY", "COMPLETED"], jm.monitor_log(job_id)
    assert attempts[1]["resources"]["mem"] == "200M"


def test_top_of_the_ladder_failing_ends_the_chain_with_a_clear_message(jm):
    ladder = ladder_file(jm, [{"mem": "100M"}, {"mem": "150M"}])
    job_id = jm.submit("--escalate", "--ladder", ladder, hungry(jm, 400))
    state = jm.wait_done(job_id, timeout=120)
    assert [a["state"] for a in state["chain"]["attempts"]] == ["OUT_OF_MEMORY", "OUT_OF_MEMORY"]
    final = jm.receiver.messages("error")[-1]["payload"]["embeds"][0]
    assert "after 2 attempts" in final["title"] and "top level" in final["description"]
    assert len(jm.receiver.messages()) == 2  # one escalation step, one final summary


def test_a_plain_failure_and_a_cuda_oom_are_not_resubmitted(jm):
    failing = jm.write_script("fail.sbatch", "#!/bin/bash\n#SBATCH -o fail-%j.out\n"
                                             "echo 'torch.OutOfMemoryError: CUDA out of memory.' >&2\nexit 1\n")
    job_id = jm.submit("--escalate", failing)
    state = jm.wait_done(job_id, timeout=60)
    assert len(state["chain"]["attempts"]) == 1
    assert "CUDA" in state["chain"]["attempts"][0]["decision"]
    assert len(jm.receiver.messages()) == 1


@pytest.mark.long_running  # two TIMEOUTs: ~150 s
def test_timeout_escalates_time_and_the_second_attempt_completes(jm):
    script = jm.write_script("slowfit.sbatch", "#!/bin/bash\n#SBATCH -o slowfit-%j.out\n#SBATCH -t 1\nsleep 75\n")
    job_id = jm.submit("--escalate", script)
    state = jm.wait_done(job_id, timeout=300)
    attempts = state["chain"]["attempts"]
    assert [a["state"] for a in attempts] == ["TIMEOUT", "COMPLETED"], jm.monitor_log(job_id)
    assert attempts[1]["resources"]["time"] == "00:02:00"


def _slow_sbatch(jm) -> str:
    """An sbatch that takes 6 s for chain resubmissions: time to kill the daemon mid-decision."""
    folder = os.path.join(jm.work, "bin")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "sbatch")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('#!/bin/sh\ncase "$*" in *jobmon-chain*) sleep 6 ;; esac\nexec /usr/bin/sbatch "$@"\n')
    os.chmod(path, 0o755)
    return folder + ":" + USER_PATH


def _kill_during_resubmission(jm, job_id: str, *, with_sbatch: bool) -> None:
    jm.wait_state(job_id, lambda s: s["chain"]["pending"], 60, "escalation decided")
    time.sleep(1)
    pid = jm.daemon_pid(job_id)
    if with_sbatch:  # the whole process group: the pending sbatch never runs
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    else:  # only the daemon: its sbatch carries on and submits after the daemon is gone
        os.kill(pid, signal.SIGKILL)
    time.sleep(8)


def test_daemon_killed_while_sbatch_runs_is_recovered_without_a_second_submission(jm):
    jm.env["PATH"] = _slow_sbatch(jm)
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    job_id = jm.submit("--escalate", "--mem=100M", hungry(jm, 150))
    _kill_during_resubmission(jm, job_id, with_sbatch=False)
    assert len([c for c in comments() if f"jobmon-chain:{job_id}:2" in c]) == 1  # sbatch finished on its own
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0, recovered.stderr
    state = jm.wait_done(job_id, timeout=120)
    assert [a["state"] for a in state["chain"]["attempts"]] == ["OUT_OF_MEMORY", "COMPLETED"]
    assert "adopting" in jm.monitor_log(job_id)
    assert len([c for c in comments() if f"jobmon-chain:{job_id}:2" in c]) <= 1


def test_daemon_killed_before_sbatch_ran_is_recovered_with_exactly_one_submission(jm):
    jm.env["PATH"] = _slow_sbatch(jm)
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    job_id = jm.submit("--escalate", "--mem=100M", hungry(jm, 150))
    _kill_during_resubmission(jm, job_id, with_sbatch=True)
    assert [c for c in comments() if f"jobmon-chain:{job_id}:2" in c] == []
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0, recovered.stderr
    state = jm.wait_done(job_id, timeout=120)
    assert [a["state"] for a in state["chain"]["attempts"]] == ["OUT_OF_MEMORY", "COMPLETED"]
    second = state["chain"]["attempts"][1]["job_id"]
    assert [c for c in comments() if f"jobmon-chain:{job_id}:2" in c] in ([], [f"{second}|jobmon-chain:{job_id}:2"])


MIXED_ARRAY = r"""#!/bin/bash
#SBATCH -J mixed
#SBATCH --array=0-3
#SBATCH -o mixed-%A_%a.out
case "$SLURM_ARRAY_TASK_ID" in
  0|1) python3 -c 'import time; b = bytearray(250 * 1024 * 1024); time.sleep(4); print("big task ok")' ;;
  2) echo "ModuleNotFoundError: No module named 'wandb'" >&2; exit 1 ;;
  *) echo "small task ok" ;;
esac
"""


def test_array_resubmits_only_its_oom_tasks_and_ends_with_one_summary(jm):
    ladder = ladder_file(jm, [{"mem": "100M"}, {"mem": "500M"}])
    job_id = jm.submit("--escalate", "--ladder", ladder, jm.write_script("mixed.sbatch", MIXED_ARRAY))
    state = jm.wait_done(job_id, timeout=150)
    chain = state["chain"]
    rounds = [(r["number"], r["task_counts"], r["retried_tasks"]) for r in chain["rounds"]]
    assert rounds == [(1, {"OUT_OF_MEMORY": 2, "FAILED": 1, "COMPLETED": 1}, "0,1"), (2, {"COMPLETED": 2}, "")], \
        jm.monitor_log(job_id)
    second = chain["attempts"][1]["job_id"]
    submitted = [(a["tasks"], a["resources"]["mem"]) for a in chain["attempts"]]
    assert submitted == [("", "100M"), ("0,1", "500M")]
    rows = subprocess.run(["sacct", "-X", "-n", "-P", "-j", second, "--format=JobID,ReqMem,State"],
                          capture_output=True, text=True).stdout.split()
    assert sorted(rows) == [f"{second}_0|500M|COMPLETED", f"{second}_1|500M|COMPLETED"]  # only the OOM tasks ran again
    final = state["final"]
    assert final["task_counts"] == {"COMPLETED": 3, "FAILED": 1} and final["failed_tasks"] == "2"
    assert state["categories"] == ["import_error"]
    titles = [m["payload"]["embeds"][0]["title"].replace("\\", "") for m in jm.receiver.messages()]
    assert titles == [
        f"Array {job_id} (mixed) round 1: 2 OUT_OF_MEMORY, 1 COMPLETED, 1 FAILED → resubmitted 0,1 as {second}",
        f"Array chain {job_id} (mixed): 3 COMPLETED, 1 FAILED after 2 rounds",
    ]
    report = jm.jobmon("report", "--csv", job_id)
    assert report.returncode == 0 and f"{second},0,1," in report.stdout.replace('"', ""), report.stdout


def submit_lines(tag: str) -> list:
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "now-1hour", "--format=JobID,SubmitLine"],
                         capture_output=True, text=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if f"--comment={tag} " in line]


def test_recover_long_after_the_crash_finds_the_resubmission_in_sacct_not_twice(jm):
    jm.env["PATH"] = _slow_sbatch(jm)
    jm.env["JOBMON_HEARTBEAT_GRACE"] = "1"
    job_id = jm.submit("--escalate", "--mem=100M", hungry(jm, 150))
    _kill_during_resubmission(jm, job_id, with_sbatch=False)
    tag = f"jobmon-chain:{job_id}:2"
    deadline = time.time() + 90
    while any(tag in c for c in comments()) and time.time() < deadline:  # until the controller forgets it
        time.sleep(2)
    assert not any(tag in c for c in comments())
    recovered = jm.jobmon("recover")
    assert recovered.returncode == 0, recovered.stderr
    state = jm.wait_done(job_id, timeout=120)
    assert [a["state"] for a in state["chain"]["attempts"]] == ["OUT_OF_MEMORY", "COMPLETED"], jm.monitor_log(job_id)
    assert "adopting" in jm.monitor_log(job_id)
    assert submit_lines(tag) == [state["chain"]["attempts"][1]["job_id"]]


RELAUNCH_ARRAY = r"""#!/bin/bash
#SBATCH -J twolevels
#SBATCH --array=0-2
#SBATCH -o twolevels-%A_%a.out
case "$SLURM_ARRAY_TASK_ID" in
  0) python3 -c 'import time; b = bytearray(150 * 1024 * 1024); time.sleep(4); print("big task ok")' ;;
  1) if [ -e relaunched.marker ]; then echo "second run ok"; else touch relaunched.marker; exit 75; fi ;;
  *) echo "small task ok" ;;
esac
"""


def test_an_array_round_with_two_next_levels_is_two_jobs_watched_together(jm):
    """Default ladder: task 0 (OOM) doubles its memory, task 1 (exit 75, set to relaunch) keeps its level."""
    jm.write_config(escalation={"exit_codes": {"75": "relaunch"}})
    job_id = jm.submit("--escalate", "--mem=100M", jm.write_script("twolevels.sbatch", RELAUNCH_ARRAY))
    state = jm.wait_done(job_id, timeout=150)
    chain = state["chain"]
    round_two = [(a["tasks"], a["resources"]["mem"]) for a in chain["attempts"] if a["round"] == 2]
    assert sorted(round_two) == [("0", "200M"), ("1", "100M")], jm.monitor_log(job_id)
    assert [r["task_counts"] for r in chain["rounds"]] == [
        {"OUT_OF_MEMORY": 1, "FAILED": 1, "COMPLETED": 1}, {"COMPLETED": 2}]
    assert state["final"]["task_counts"] == {"COMPLETED": 3}
    jobs = ", ".join(a["job_id"] for a in chain["attempts"] if a["round"] == 2)
    messages = jm.receiver.messages()
    assert [m["webhook"] for m in messages] == ["error", "success"]
    assert f"→ resubmitted 0,1 as {jobs}" in messages[0]["payload"]["embeds"][0]["title"].replace("\\", "")
    assert messages[1]["payload"]["embeds"][0]["title"].replace("\\", "") == \
        f"Array chain {job_id} (twolevels): 3 COMPLETED after 2 rounds"
