#!/usr/bin/env python3
"""What following running jobs' logs costs a monitor: CPU per monitor per poll, by log size and growth.

    python3 bench/live.py            # 20 monitors, 1 MB/s each, 30 s polls, logs of 10 MB and 10 GB
    python3 bench/live.py --quick    # fewer polls

No Slurm needed: each "monitor" is what a daemon's poll of a running job costs apart from squeue and the state
write (core.monitor.poller.Poller.poll with every live check: read what the logs gained, find the newest
progress, note pauses, scan the new lines for hang signatures, judge stalls and the time limit), on real
files in a temp folder, with squeue's answer stubbed. Each
poll first appends `growth x interval` bytes of training-log text (tqdm frames with `\\r`, log lines) to
every log. The 10 GB logs are sparse files: their size is real, their blocks are not. The point to read:
the cost per poll follows the growth, and is the same for a 10 MB and a 10 GB log.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Tuple

from sandbox import ROOT, print_table

sys.path.insert(0, ROOT)

from core.analysis.analyzer import parse_patterns  # noqa: E402
from core.config import BUILTIN_PATTERNS, Config, read_patterns_file  # noqa: E402
from core.monitor.checks import checks_for  # noqa: E402
from core.monitor.poller import Poller  # noqa: E402
from core.slurm.model import JobState, QueueEntry  # noqa: E402
from core.state.model import JobRecord  # noqa: E402


class RunningQueue:
    """squeue's answer for every job: RUNNING, an hour left of a day."""

    def query_queue(self, job_ids, *, not_before=0.0):
        return {job: QueueEntry(job, JobState.RUNNING, "None", "23:00:00", "1-00:00:00", "1:00:00") for job in job_ids}

    def query_accounting(self, job_ids):
        return {}

    def next_poll_delay(self, interval, job_id):
        return interval

MB = 1024 * 1024


def training_text(size: int, step: int) -> Tuple[bytes, int]:
    """About `size` bytes of what a training job writes: tqdm frames on one line, now and then a log line."""
    parts: List[bytes] = []
    written = 0
    while written < size:
        step += 1
        frame = (f"\rEpoch 3:  {step % 100:3d}%|{'#' * (step % 100 // 10):<10}| {step}/1000000 "
                 f"[01:02<15:23, 7.21it/s, loss=0.{step % 97:02d}]").encode()
        if step % 50 == 0:
            frame += f"\n[2026-11-29 00:00:{step % 60:02d}] step {step} lr=3e-4 grad_norm=1.2\n".encode()
        parts.append(frame)
        written += len(frame)
    return b"".join(parts), step


def measure(base_size: int, monitors: int, growth: int, interval: float, polls: int, folder: str) -> List[float]:
    """CPU seconds per monitor per poll."""
    records = []
    for n in range(monitors):
        path = os.path.join(folder, f"job{n}-{base_size}.err")
        with open(path, "wb") as handle:
            handle.truncate(base_size)  # sparse: the size is real, the blocks are not
            handle.seek(base_size)
            handle.write(b"\n")
        records.append(JobRecord(job_id=str(1000 + n), stdout_path=path, stderr_path=path))
    patterns = parse_patterns(read_patterns_file(BUILTIN_PATTERNS), BUILTIN_PATTERNS)
    config = Config()
    poller = Poller(RunningQueue(), config, checks_for(config, lambda: patterns))
    now = time.time()
    step = 0
    for record in records:  # the first poll reads the end of what exists (like a monitor attached late)
        record.live = poller.poll(record, now).live
    costs: List[float] = []
    for _ in range(polls):
        now += interval
        chunk, step = training_text(int(growth * interval), step)
        for record in records:
            with open(record.stderr_path, "ab") as handle:
                handle.write(chunk)
        started = time.process_time()
        for record in records:
            record.live = poller.poll(record, now).live
        costs.append((time.process_time() - started) / monitors)
        assert records[0].live is not None and records[0].live.reading is not None
    for record in records:
        os.unlink(record.stderr_path)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    polls = 3 if args.quick else 10
    monitors, interval = 20, 30.0
    folder = tempfile.mkdtemp(prefix="jobmon-bench-live-")
    rows = []
    try:
        for growth, label in ((MB, "1 MB/s"), (MB // 100, "10 kB/s")):
            for size, size_label in ((10 * MB, "10 MB"), (10 * 1024 * MB, "10 GB")):
                costs = measure(size, monitors, growth, interval, polls, folder)
                rows.append((0, f"{size_label} log growing {label}",
                             [f"{statistics.median(costs) * 1000:.1f} ms", f"{max(costs) * 1000:.1f} ms",
                              f"{statistics.median(costs) / interval * 100:.2f} %"],
                             "a log that grew more than 2 MiB since the last poll is read from its last 2 MiB"
                             if growth * interval > 2 * MB else ""))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(f"Following logs: {monitors} monitors, a poll every {interval:.0f} s, {polls} polls",
                ("log", "CPU/monitor/poll (median)", "max", "CPU share of one core"), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
