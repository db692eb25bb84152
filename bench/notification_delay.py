#!/usr/bin/env python3
"""Notification delay on the real local Slurm: from the job's end (sacct End) to the webhook hit.

Usage: python3 bench/notification_delay.py [--jobs N] [--interval SECONDS ...]
Submits N short jobs per poll interval with `jobmon submit`, waits for every notification at the
local Discord-compatible receiver, and prints median and max delay per interval.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from discord_receiver import DiscordReceiver  # noqa: E402


def sacct_end(job_id: str) -> float:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=End"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return datetime.datetime.fromisoformat(out.splitlines()[0]).timestamp()


def measure(interval: float, jobs: int) -> list:
    receiver = DiscordReceiver()
    receiver.start()
    home = tempfile.mkdtemp(prefix="jobmon-bench-")
    with open(os.path.join(home, "config.json"), "w") as handle:
        json.dump({"discord": {"success_webhook": receiver.webhook_url("success")}}, handle)
    env = dict(os.environ, JOBMON_HOME=home, JOBMON_POLL_INTERVAL=str(interval),
               JOBMON_PENDING_INTERVAL=str(interval))
    script = os.path.join(home, "job.sbatch")
    with open(script, "w") as handle:
        handle.write("#!/bin/bash\n#SBATCH -o /dev/null\nsleep 2\n")
    ids = []
    for _ in range(jobs):
        done = subprocess.run([os.path.join(ROOT, "jobmon"), "submit", script], capture_output=True, text=True,
                              env=env, cwd=home, check=True)
        ids.append(done.stdout.split("Submitted batch job ", 1)[1].split()[0])
        time.sleep(interval / jobs)  # spread the ends over one poll interval
    messages = receiver.wait_for(jobs, timeout=interval * 4 + 120)
    arrivals = {}
    for message in messages:
        title = message["payload"]["embeds"][0]["title"]
        job_id = title.split()[1]
        arrivals[job_id] = message["received_at"]
    receiver.stop()
    return [arrivals[job_id] - sacct_end(job_id) for job_id in ids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--interval", type=float, nargs="+", default=[30.0, 2.0])
    args = parser.parse_args()
    print(f"{'poll interval':>14} {'jobs':>5} {'median delay':>13} {'max delay':>10}")
    for interval in args.interval:
        delays = measure(interval, args.jobs)
        print(f"{interval:>13.0f}s {len(delays):>5} {statistics.median(delays):>12.1f}s {max(delays):>9.1f}s")
    print("(sacct End has 1 s resolution: delays are +-1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
