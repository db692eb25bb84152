"""`jobmon watch --all` on the real Slurm, as the non-root test user: jobs submitted with plain sbatch get a
monitor when their name matches and not otherwise, and `jobmon submit` racing the watcher still gives one
monitor (and one final message) per job."""
from __future__ import annotations

import os
import shutil
import time
from typing import List

from conftest import USER_PATH, is_done

RACE_JOB = """#!/bin/bash
#SBATCH -J sweep-race
#SBATCH -o race-%j.out
sleep 6
"""


def _is_monitor_of(pid: str, job_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return b"core.daemon" in argv and argv[argv.index(b"core.daemon") + 1:][:1] == [job_id.encode()]


def _parent(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


def monitor_processes(job_id: str) -> List[int]:
    """Processes running `python -m core.daemon JOBID` (a job's monitor daemon); a monitor's own child between
    fork and exec (its delivery process starting) has the same command line and is not counted."""
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and _is_monitor_of(name, job_id) and not _is_monitor_of(_parent(name), job_id)]


def sbatch(jm, name: str, seconds: int) -> str:
    done = jm.run("sbatch", "--parsable", "-J", name, "-o", f"{name}-%j.out", "--wrap", f"sleep {seconds}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def finals_about(jm, job_id: str) -> list:
    titles = [(m, m["payload"]["embeds"][0]["title"].replace("\\", "")) for m in jm.receiver.messages()]
    return [m for m, title in titles if f"Job {job_id} " in title]


def test_watch_all_attaches_to_matching_sbatch_jobs_once_and_a_racing_submit_still_gives_one_monitor(jm):
    jm.env["JOBMON_WATCH_GRACE"] = "0"  # the watcher attaches at first sight: submit really races it
    started = jm.jobmon("watch", "--all", "--name", "^sweep-")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert "watch --all: ALIVE" in jm.jobmon("status").stdout
        sweep_a, sweep_b, other = sbatch(jm, "sweep-a", 6), sbatch(jm, "sweep-b", 6), sbatch(jm, "other-c", 6)
        script = jm.write_script("race.sbatch", RACE_JOB)
        raced = [jm.submit(script) for _ in range(3)]
        # The watcher first: this submit's scontrol (between its sbatch and its record) takes 5 s, so the watcher
        # (polling every second) creates the record and starts the monitor, and submit adopts the record.
        slow = os.path.join(jm.work, "slowbin")
        os.makedirs(slow)
        jm.write_script("slowbin/scontrol", f"#!/bin/sh\nsleep 5\nexec {shutil.which('scontrol')} \"$@\"\n")
        late = jm.jobmon("submit", script, extra_env={"PATH": f"{slow}:{USER_PATH}"})
        assert late.returncode == 0, late.stdout + late.stderr
        adopted = late.stdout.split("Submitted batch job ", 1)[1].split()[0]
        assert "started by `jobmon watch --all`" in late.stdout, late.stdout
        raced.append(adopted)
        peak = {job: 0 for job in [sweep_a, sweep_b, *raced]}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for job in peak:
                peak[job] = max(peak[job], len(monitor_processes(job)))
            states = {}
            for job in peak:
                try:
                    states[job] = jm.state(job)
                except OSError:
                    states[job] = {}
            if all(state and is_done(state) for state in states.values()):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"not all done: {[job for job, s in states.items() if not (s and is_done(s))]}\n"
                                 + open(os.path.join(jm.home, "logs", "watch-all.log")).read())
        assert all(count == 1 for count in peak.values()), f"monitor processes per job, at most: {peak}"
        assert jm.state(sweep_a)["source"] == "watch-all" and jm.state(sweep_b)["source"] == "watch-all"
        assert all(jm.state(job)["source"] == "submit" for job in raced), "submit's record (adopted or its own)"
        assert not os.path.exists(os.path.join(jm.home, "state", f"{other}.json")), "other-c does not match ^sweep-"
        for job in [sweep_a, sweep_b, *raced]:
            assert len(finals_about(jm, job)) == 1, (job, [m["payload"]["embeds"][0]["title"] for m in
                                                           jm.receiver.messages()])
        assert finals_about(jm, other) == []
        for job in peak:  # one daemon ever started per job: none refused by the monitor lock either
            log = jm.monitor_log(job)
            assert log.count(f"monitoring job {job} (poll") == 1 and "another monitor already holds" not in log, log
        log = open(os.path.join(jm.home, "logs", "watch-all.log")).read()
        print("\n" + log)
        assert f"job {adopted}: monitor started" in log
        assert jm.state(adopted)["script"] == script and jm.state(adopted)["sbatch_args"] == []
    finally:
        stopped = jm.jobmon("watch", "--all", "--stop")
    assert stopped.returncode == 0 and "stopped the watcher" in stopped.stdout, stopped.stdout + stopped.stderr
    time.sleep(0.5)
    assert "watch --all" not in jm.jobmon("status").stdout
