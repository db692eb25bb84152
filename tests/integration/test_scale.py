"""Arrays, het jobs and many jobs on the real Slurm: one summary per group, ~one squeue per interval in total."""
from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import USER_PATH

ARRAY_JOB = r"""#!/bin/bash
#SBATCH -J sweep
#SBATCH --array=0-5%3
#SBATCH -o sweep-%A_%a.out
sleep 1
case "$SLURM_ARRAY_TASK_ID" in
  2) echo "ModuleNotFoundError: No module named 'wandb'" >&2; exit 1 ;;
  4) echo "FileNotFoundError: [Errno 2] No such file or directory: 'shard-4.parquet'" >&2; exit 3 ;;
esac
echo "task $SLURM_ARRAY_TASK_ID ok"
"""


#: Component 1 cannot meet its deadline (5 s to start a 1-minute job), so Slurm ends it DEADLINE
#: within seconds while component 0 waits. No het job can run here: on a single node backfill
#: reserves the whole node for each component in turn, so the components never start together.
HET_JOB = r"""#!/bin/bash
#SBATCH -J hetdl
#SBATCH -o hetdl-%j.out
#SBATCH -n1 --mem=200M -t 1
#SBATCH hetjob
#SBATCH -n1 --mem=200M -t 1 --deadline=now+65seconds
srun --het-group=0 true
"""


def counting_path(jm) -> str:
    """A folder of squeue/sacct wrappers that log each call, first on the user's PATH."""
    folder = os.path.join(jm.work, "bin")
    os.makedirs(folder)
    log = os.path.join(jm.work, "slurm-calls.log")
    for command in ("squeue", "sacct"):
        path = os.path.join(folder, command)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'#!/bin/sh\necho "{command} $*" >> {log}\nexec /usr/bin/{command} "$@"\n')
        os.chmod(path, 0o755)
    os.chown(jm.work, jm.account.uid, jm.account.gid)
    open(log, "w").close()
    os.chmod(log, 0o666)
    return folder


def calls(jm, command: str):
    with open(os.path.join(jm.work, "slurm-calls.log"), encoding="utf-8") as handle:
        return [line for line in handle if line.startswith(command + " ")]


def test_array_gets_one_monitor_and_one_summary(jm):
    job_id = jm.submit(jm.write_script("sweep.sbatch", ARRAY_JOB))
    state = jm.wait_done(job_id, timeout=90)
    final = state["final"]
    assert final["task_counts"] == {"COMPLETED": 4, "FAILED": 2}, jm.monitor_log(job_id)
    assert final["failed_tasks"] == "2,4"
    assert state["categories"][:2] == ["import_error", "file_not_found"]
    by_task = {t["task_id"]: t for t in state["tasks"]}
    assert by_task["4"]["exit_code"] == 3 and by_task["4"]["categories"] == ["file_not_found"]
    messages = jm.receiver.messages()
    assert [m["webhook"] for m in messages] == ["error"]
    title = messages[0]["payload"]["embeds"][0]["title"].replace("\\", "")
    assert title == f"Array {job_id} (sweep): 4 COMPLETED, 2 FAILED"
    assert len(os.listdir(os.path.join(jm.home, "state"))) > 0
    assert [name for name in os.listdir(os.path.join(jm.home, "state")) if name.endswith(".json")
            and name[0].isdigit()] == [f"{job_id}.json"]


def het_component_states(job_id: str) -> dict:
    """`{"857+0": "PENDING", "857+1": "DEADLINE"}`: squeue -j on a het job lists every component."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True)
    return dict(line.split() for line in done.stdout.splitlines() if line.strip())


def test_het_job_gets_one_summary_naming_its_failed_component(jm):
    job_id = jm.submit(jm.write_script("het.sbatch", HET_JOB))
    deadline = time.monotonic() + 30
    while het_component_states(job_id).get(f"{job_id}+1") != "DEADLINE":
        assert time.monotonic() < deadline, het_component_states(job_id)
        time.sleep(0.2)
    time.sleep(3)  # three polls with component 0 still pending: the het job has not ended
    assert jm.state(job_id)["final"] is None and jm.receiver.messages() == []
    cancelled_at = time.time()
    done = jm.run("scancel", job_id)
    assert done.returncode == 0, done.stderr
    state = jm.wait_done(job_id, timeout=60)
    final = state["final"]
    assert final["task_counts"] == {"CANCELLED": 1, "DEADLINE": 1}, jm.monitor_log(job_id)
    assert final["state"] == "DEADLINE"
    assert {t["task_id"]: (t["state"], t["raw_id"]) for t in state["tasks"]} == {
        "+0": ("CANCELLED", job_id), "+1": ("DEADLINE", str(int(job_id) + 1))}
    messages = jm.receiver.messages()
    assert [m["webhook"] for m in messages] == ["error"]
    embed = messages[0]["payload"]["embeds"][0]
    assert embed["title"].replace("\\", "") == f"Het job {job_id} (hetdl): 1 CANCELLED, 1 DEADLINE"
    # squeue lists every component, so no array-style settle wait (10 s) delays the summary.
    assert messages[0]["received_at"] - cancelled_at < 8, jm.monitor_log(job_id)


def test_ten_monitors_cost_about_one_squeue_per_interval(jm):
    jm.env["PATH"] = counting_path(jm) + ":" + USER_PATH
    jm.env["JOBMON_POLL_INTERVAL"] = jm.env["JOBMON_PENDING_INTERVAL"] = "2"
    script = jm.write_script("busy.sbatch", "#!/bin/bash\n#SBATCH -o busy-%j.out\nsleep 14\n")
    ids = [jm.submit(script) for _ in range(10)]
    for job_id in ids:
        jm.wait_state(job_id, lambda s: s["monitor"]["pid"] > 0, 20, "daemon running")
    start_count = len(calls(jm, "squeue"))
    window = 8.0
    time.sleep(window)
    during = len(calls(jm, "squeue")) - start_count
    # One shared refresh per 2 s interval: about 4 in 8 s. The naive way (one squeue per job
    # per interval) would be 40.
    assert 2 <= during <= 7, calls(jm, "squeue")
    status_before = len(calls(jm, "squeue"))
    shown = json.loads(jm.jobmon("status", "--json").stdout)
    assert {row["job_id"] for row in shown["jobs"]} == set(ids)
    assert len(calls(jm, "squeue")) - status_before <= 1
    for job_id in ids:
        jm.wait_done(job_id, timeout=60)
    assert len(jm.receiver.messages("success")) == 10
    assert len(calls(jm, "sacct")) < 10 * 2
