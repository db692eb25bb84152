#!/usr/bin/env python3
"""What one job's monitor daemon holds in memory, on the real local Slurm (issue 10: an idle daemon stays
at or under 16 MB RSS).

    python3 bench/daemon_memory.py              # 10 minutes of polls every 2 s (300 polls)
    python3 bench/daemon_memory.py --minutes 2

`jobmon submit`s three jobs into a throw-away JOBMON_HOME, each with its own daemon polling every 2 s
(15 times as often as the default 30 s, so 10 minutes are 300 polls, 2.5 hours of a default daemon):
  1. held (`--hold`): the daemon of a pending job;
  2. running, logs silent: the idle daemon of a running job (live checks and resource sampling on);
  3. running, printing a tqdm-style bar every second: the log parsers loaded and working.
It prints each daemon's VmRSS and private memory after 5 polls and then every minute, and a bare
interpreter's for reference. Read: the first two columns against 16 MB = 15,625 KiB, and whether a
column keeps growing from minute to minute.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from sandbox import Sandbox, cleanup, daemon_interpreter, memory_kib, slurm_is_up, wait_for_integration_tests

INTERVAL = 2.0
BAR = """#!/bin/bash
#SBATCH -o {folder}/bar-%j.out
#SBATCH -e {folder}/bar-%j.err
for i in $(seq 1 {steps}); do
    printf '\\rtrain: %d%%|###| %d/{steps} [00:%02d<01:00, 1.00it/s]' $((i*100/{steps})) $i $((i%60)) >&2
    sleep 1
done
"""
SILENT = "#!/bin/bash\n#SBATCH -o {folder}/silent-%j.out\nsleep {seconds}\n"


def script(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    if not slurm_is_up():
        print("bench: Slurm does not answer; start it with `bash scripts/slurm-local.sh setup`", file=sys.stderr)
        return 2
    wait_for_integration_tests()
    seconds = args.minutes * 60 + 120
    root = tempfile.mkdtemp(prefix="jobmon-bench-memory-")
    os.chmod(root, 0o755)
    children: List[subprocess.Popen] = []
    try:
        with Sandbox(root, "memory", INTERVAL) as box:
            jobs = {
                "held": box.submit_one(script(root, "held.sbatch", SILENT.format(folder=root, seconds=seconds)),
                                       "--hold"),
                "silent": box.submit_one(script(root, "silent.sbatch", SILENT.format(folder=root, seconds=seconds))),
                "tqdm bar": box.submit_one(script(root, "bar.sbatch", BAR.format(folder=root, steps=seconds))),
            }
            box.wait_polls(list(jobs.values()), 5)
            pids = {name: box.daemons[job] for name, job in jobs.items()}
            interpreter = daemon_interpreter(pids["silent"])
            bare = subprocess.Popen([interpreter, "-S", "-c", "import time; time.sleep(3600)"])
            children.append(bare)
            time.sleep(1)
            print(f"daemon interpreter {interpreter}; bare `-S` interpreter: RSS {memory_kib(bare.pid)[0]:,} KiB")
            print(f"{'after':>8}  " + "  ".join(f"{name + ' RSS (private)':>26}" for name in pids))
            started = time.monotonic()
            for minute in range(args.minutes + 1):
                if minute:
                    time.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                row: Dict[str, str] = {}
                for name, pid in pids.items():
                    rss, private = memory_kib(pid)
                    row[name] = f"{rss:,} KiB ({private:,})"
                label = "5 polls" if minute == 0 else f"{minute} min"
                print(f"{label:>8}  " + "  ".join(f"{cell:>26}" for cell in row.values()), flush=True)
    finally:
        cleanup(root, children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
