#!/usr/bin/env python3
"""jobmon's costs next to the naive way's, measured on the real local Slurm, printed as one table.

    python3 bench/run.py            # ~12 min; polling measured at the default 30 s interval
    python3 bench/run.py --quick    # ~4 min; polling measured at 5 s and scaled to 30 s, fewer jobs

Run as root from the checkout with the local Slurm up (`bash scripts/slurm-local.sh status`;
`bash scripts/slurm-local.sh setup` starts it). jobmon runs through its own entry point, as root,
with JOBMON_HOME in a temp folder and a local Discord receiver (tests/discord_receiver.py).
Before each Slurm part the benchmark waits until no `pytest tests/integration` is running.
Ctrl-C (or SIGTERM) cancels its jobs, kills its daemons and removes its files; so does a normal end.

1. squeue+sacct calls per minute with 1, 10 and 50 monitored `sleep` jobs, counted by wrapper
   scripts first on jobmon's PATH, versus one squeue per job per 30 s (computed).
2. Memory of an idle daemon versus the same daemon importing `requests` at start, and a bare
   interpreter for reference.
3. Reading the last 500 lines of 1 MiB, 100 MiB and 2 GiB logs: core.logtail.read_tail versus
   reading the whole file line by line.
4. The analyzer on 500 lines against the built-in pattern library, versus a whole 100 MiB log
   at the same rate (computed).
5. Notification delay, job end (sacct End) to webhook received, at the 30 s and a 2 s interval,
   next to the floor any poller at that interval has (computed).
6. `jobmon status` over 1,000 state files: wall time and squeue calls versus one squeue per row.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from sandbox import (
    ROOT,
    SQUEUE,
    TAG,
    Sandbox,
    cleanup,
    daemon_interpreter,
    job_script,
    maps_library,
    memory_kib,
    print_table,
    sacct_end_times,
    slurm_is_up,
    terminate,
    wait_for_integration_tests,
)

sys.path.insert(0, ROOT)

from core.analysis.analyzer import analyze, parse_patterns  # noqa: E402
from core.analysis.logtail import read_tail  # noqa: E402
from core.config import BUILTIN_PATTERNS, DEFAULT_RUNNING_INTERVAL, read_patterns_file  # noqa: E402
from core.locking import use_lean_locks  # noqa: E402
from core.notify.events import EventKind, Route  # noqa: E402
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery  # noqa: E402
from core.slurm.model import JobState  # noqa: E402
from core.slurm.parse import squeue_format  # noqa: E402
from core.slurm.shared import QUEUE_FILE  # noqa: E402
from core.state.model import FinalRecord, JobRecord, MonitorInfo, Observation  # noqa: E402
from core.state.store import StateStore  # noqa: E402

TAIL_LINES = 500
MONITORED = (1, 10, 50)
LONG_JOB = 3600  # seconds: outlives every measurement; cancelled afterwards
SHORT_JOB = 2.0
MEMORY_INTERVAL = 2.0
MEMORY_POLLS = 3
SHORT_INTERVAL = 2.0
LOG_SIZES = (("1 MiB", 1 << 20), ("100 MiB", 100 << 20), ("2 GiB", 2 << 30))
DISK_MARGIN = 1 << 30
BIG_LOG = 1 << 30  # read whole only once, and not at all with --quick
BLOCK_LINES = 10_000
TAIL_RUNS = 5
WHOLE_RUNS = 3
STATUS_FILES = 1000
FAKE_JOB_BASE = 5_000_000
SQUEUE_SAMPLES = 10


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure: the full run, or a shorter --quick one."""

    quick: bool

    @property
    def poll_interval(self) -> float:
        return 5.0 if self.quick else DEFAULT_RUNNING_INTERVAL

    @property
    def window_intervals(self) -> int:
        """A call-count window spans this many poll intervals."""
        return 6 if self.quick else 4

    @property
    def delay_jobs(self) -> int:
        return 6 if self.quick else 20

    @property
    def analyzer_runs(self) -> int:
        return 10 if self.quick else 30

    @property
    def status_runs(self) -> int:
        return 3 if self.quick else 5


@dataclass(frozen=True)
class Row:
    section: int
    measure: str
    jobmon: str
    naive: str
    ratio: str
    note: str = ""


# -- formatting -------------------------------------------------------------------------------
def ratio(naive: float, jobmon: float) -> str:
    """naive ÷ jobmon: how many times jobmon's figure the naive way costs."""
    if jobmon <= 0:
        return "-"
    value = naive / jobmon
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def print_rows(rows: Sequence[Row], title: str) -> None:
    print_table(title, ["measure", "jobmon", "naive way", "naive/jobmon"],
                [(row.section, row.measure, [row.jobmon, row.naive, row.ratio], row.note) for row in rows])


# -- 1. polling -------------------------------------------------------------------------------
def measure_polling(plan: Plan, root: str) -> List[Row]:
    interval = plan.poll_interval
    window = plan.window_intervals * interval
    scale = interval / DEFAULT_RUNNING_INTERVAL
    how = f"counted over {window:.0f} s at a {interval:.0f} s poll interval"
    if scale != 1:
        how += f", scaled x{scale:.3g} to the default {DEFAULT_RUNNING_INTERVAL:.0f} s"
    rows = []
    with Sandbox(root, "polling", interval) as box:
        script = job_script(box.home, LONG_JOB)
        for count in MONITORED:
            new = box.submit([script] * (count - len(box.jobs)))
            box.wait_polls(new, 1)
            # The new daemons fall into step with the shared snapshot, refreshed at the last one's first
            # poll; half an interval more opens the window mid-cycle, not on a refresh.
            time.sleep(1.5 * interval)
            running, pending = box.queue_states()
            before = box.calls()
            time.sleep(window)
            per_minute = (box.calls() - before) / window * 60 * scale
            naive = count * 60 / DEFAULT_RUNNING_INTERVAL
            note = (f"{how}; jobs then {running} RUNNING + {pending} PENDING (2 cores x OverSubscribe=FORCE:4 "
                    f"= 8 run at once; pending monitors poll at the same interval here). Naive: one "
                    f"`squeue -j ID` per job per {DEFAULT_RUNNING_INTERVAL:.0f} s, computed, not run.")
            rows.append(Row(1, f"1. squeue+sacct calls/min, {count} job{'s' if count > 1 else ''}",
                            f"{per_minute:.1f}", f"{naive:.0f}", ratio(naive, per_minute), note))
    return rows


# -- 2. memory --------------------------------------------------------------------------------
def measure_memory(root: str, children: List[subprocess.Popen]) -> List[Row]:
    with Sandbox(root, "memory", MEMORY_INTERVAL) as box:
        lean_job, heavy_job = box.submit([job_script(box.home, LONG_JOB)] * 2)
        box.wait_polls([lean_job, heavy_job], 1)
        interpreter = daemon_interpreter(box.daemons[lean_job])
        children.append(box.start_heavy_daemon(heavy_job))
        box.wait_polls([lean_job, heavy_job], MEMORY_POLLS)
        lean_pid, heavy_pid = box.daemons[lean_job], box.daemons[heavy_job]
        lean, heavy = memory_kib(lean_pid), memory_kib(heavy_pid)
        ssl = {pid: "yes" if maps_library(pid, "_ssl") else "no" for pid in (lean_pid, heavy_pid)}
    bare_process = subprocess.Popen([interpreter, "-c", "import time; time.sleep(60)"])
    children.append(bare_process)
    time.sleep(1)
    bare = memory_kib(bare_process.pid)
    terminate([bare_process.pid])
    note = (f"a real daemon (`jobmon submit`, sleep job) after {MEMORY_POLLS}+ polls at {MEMORY_INTERVAL:.0f} s, "
            f"versus the same daemon started as `python -c 'import requests, runpy; runpy.run_module("
            f"\"core.daemon\", ...)'` for a second job (_ssl mapped: {ssl[lean_pid]} vs {ssl[heavy_pid]}). Bare "
            f"`python -c 'import time; time.sleep(60)'` with the daemon's interpreter {interpreter}: "
            f"RSS {mib(bare[0])}, private {mib(bare[1])}.")
    above = (lean[1] - bare[1], heavy[1] - bare[1])
    return [
        Row(2, "2. idle daemon RSS", mib(lean[0]), mib(heavy[0]), ratio(heavy[0], lean[0]), note),
        Row(2, "2. idle daemon private memory", mib(lean[1]), mib(heavy[1]), ratio(heavy[1], lean[1]), note),
        Row(2, "2. idle daemon private memory above bare python", mib(above[0]), mib(above[1]),
            ratio(above[1], above[0]), note),
    ]


# -- 3. reading the end of a log --------------------------------------------------------------
def training_lines(count: int) -> List[str]:
    """What fills a job log between its errors: a PyTorch training loop's progress lines."""
    return [f"[2024-05-01 12:{i // 60 % 60:02d}:{i % 60:02d}] [rank{i % 4}]: epoch {i // 1000} step {i:>7} "
            f"loss={2.5 / (1 + i % 997):.4f} lr=3.0e-04 grad_norm={0.5 + i % 13 / 10:.2f} 41{i % 10}.2 samples/s"
            for i in range(count)]


def training_block() -> bytes:
    """BLOCK_LINES progress lines, about 1 MiB: big logs are this block over and over."""
    return ("\n".join(training_lines(BLOCK_LINES)) + "\n").encode()


def fixture_lines() -> List[str]:
    lines = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "logs", "*.log"))):
        with open(path, encoding="utf-8") as handle:
            lines += handle.read().splitlines()
    return lines


def write_log(path: str, size: int, block: bytes, crash: bytes) -> None:
    """About `size` bytes of real lines, ending with a crash."""
    with open(path, "wb") as handle:
        for _ in range(max(1, size // len(block))):
            handle.write(block)
        handle.write(crash)


def evict(path: str) -> None:
    """Drop the file from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_cold(read: Callable[[str], List[str]], path: str, runs: int) -> Tuple[float, List[str]]:
    """Median time of `runs` reads, each from a cold cache, and the lines read."""
    times = []
    lines: List[str] = []
    for _ in range(runs):
        evict(path)
        start = time.perf_counter()
        lines = read(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), lines


def read_end(path: str) -> List[str]:
    return list(read_tail(path, TAIL_LINES).lines)


def read_whole(path: str) -> List[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=TAIL_LINES)]


def measure_log_tail(plan: Plan, root: str) -> List[Row]:
    folder = os.path.join(root, "logs")
    os.makedirs(folder)
    block = training_block()
    crash = ("\n".join(fixture_lines()) + "\n").encode()
    note = (f"cold page cache (posix_fadvise DONTNEED before every read); median of {TAIL_RUNS} reads (whole "
            f"file: {WHOLE_RUNS}, 1 above {BIG_LOG >> 30} GiB). jobmon: core.logtail.read_tail(path, {TAIL_LINES}); "
            f"naive: collections.deque(open(path), maxlen={TAIL_LINES}), i.e. reading every line.")
    rows = []
    for label, size in LOG_SIZES:
        measure = f"3. last {TAIL_LINES} lines of a {label} log"
        free = shutil.disk_usage(folder).free
        if free < size + DISK_MARGIN:
            rows.append(Row(3, measure, "skipped", "skipped", "-", f"{label}: only {free >> 20} MiB free on disk"))
            continue
        path = os.path.join(folder, "job.log")
        try:
            write_log(path, size, block, crash)
            tail_time, tail = timed_cold(read_end, path, TAIL_RUNS)
            if plan.quick and size > BIG_LOG:
                rows.append(Row(3, measure, duration(tail_time), "skipped (--quick)", "-", note))
                continue
            whole_time, whole = timed_cold(read_whole, path, 1 if size > BIG_LOG else WHOLE_RUNS)
            if whole != tail:
                raise AssertionError(f"read_tail and the whole-file read disagree on the {label} log")
            rows.append(Row(3, measure, duration(tail_time), duration(whole_time), ratio(whole_time, tail_time),
                            note))
        finally:
            os.remove(path)
    return rows


# -- 4. analyzer ------------------------------------------------------------------------------
def measure_analyzer(plan: Plan) -> List[Row]:
    patterns = parse_patterns(read_patterns_file(BUILTIN_PATTERNS), BUILTIN_PATTERNS)
    crash = fixture_lines()
    lines = training_lines(TAIL_LINES - len(crash)) + crash
    times = []
    for _ in range(plan.analyzer_runs):
        start = time.perf_counter()
        analyze(lines, patterns)
        times.append(time.perf_counter() - start)
    took = statistics.median(times)
    rate = len(lines) / took
    whole_lines = (100 << 20) * BLOCK_LINES // len(training_block())
    naive = whole_lines / rate
    note = (f"{len(lines)} lines ({len(crash)} from tests/fixtures/logs, the rest training progress) against the "
            f"{len(patterns)} built-in patterns; median of {plan.analyzer_runs} runs. Naive: analysing a whole "
            f"100 MiB log (~{whole_lines:,} lines), computed at the measured rate.")
    return [Row(4, f"4. analyze {len(lines)} lines", f"{duration(took)} ({rate:,.0f} lines/s)",
                duration(naive), ratio(naive, took), note)]


# -- 5. notification delay --------------------------------------------------------------------
def measure_delay(plan: Plan, root: str, interval: float) -> List[Row]:
    """Job end to notification for jobs submitted together and lasting 2 s to 2 s + one interval.

    Their ends fall at every phase of the poll cycle, as real jobs' ends do; equal short jobs would
    all end just after the snapshot refresh that their first polls forced at submission.
    """
    jobs = plan.delay_jobs
    durations = [SHORT_JOB + index * interval / jobs for index in range(jobs)]
    with Sandbox(root, f"delay-{interval:g}", interval) as box:
        ids = box.submit([job_script(box.home, seconds) for seconds in durations])
        messages = box.receiver.wait_for(jobs, timeout=max(durations) + interval * 4 + 120)
        ends = sacct_end_times(ids)
    arrivals: Dict[str, float] = {}
    for message in messages:
        job_id = message["payload"]["embeds"][0]["title"].split()[1]
        arrivals.setdefault(job_id, message["received_at"])
    delays = [arrivals[job] - ends[job] for job in ids]
    median, worst = statistics.median(delays), max(delays)
    note = (f"from sacct End (1 s resolution: +-1 s) to the webhook hit at the local receiver; `sleep` jobs "
            f"submitted together with `jobmon submit`, lasting {SHORT_JOB:g} s to {SHORT_JOB:g} s + one interval, so "
            f"their ends fall at every phase of the poll cycle (at most 8 run at once, the rest wait). Naive "
            f"column: the floor of any poller at that interval, one squeue per job or shared (computed: uniform "
            f"end phase, median interval/2, max interval); above it come the End rounding, the sacct "
            f"confirmation, the analysis and the POST.")
    return [Row(5, f"5. notification delay, poll {interval:g} s, {jobs} jobs",
                f"median {median:.1f} s, max {worst:.1f} s",
                f"floor: median {interval / 2:.1f} s, max {interval:.1f} s", "-", note)]


# -- 6. jobmon status -------------------------------------------------------------------------
def dead_pids(count: int) -> List[int]:
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as handle:
        pid = int(handle.read())
    pids = []
    while len(pids) < count:
        pid -= 1
        if not os.path.exists(f"/proc/{pid}"):
            pids.append(pid)
    return pids


def write_state_files(state: str, count: int) -> None:
    """`count` records as a busy user accumulates them: 60 % running, 40 % ended in the last day.

    Every monitor points at a pid that does not exist (as after a reboot): rows show DEAD/DONE.
    """
    os.makedirs(state)
    use_lean_locks()  # the system python3 this runs on may lack filelock; the daemon's own flock serves
    store = StateStore(state)
    now = time.time()
    host = socket.gethostname()
    outcomes = ((JobState.COMPLETED, 0, Route.SUCCESS, []),
                (JobState.FAILED, 1, Route.ERROR, ["cuda_oom", "python_traceback"]),
                (JobState.OUT_OF_MEMORY, 0, Route.ERROR, ["slurm_oom"]))
    for index, pid in enumerate(dead_pids(count)):
        created = now - 7200 - index * 30
        record = JobRecord(
            job_id=str(FAKE_JOB_BASE + index), name=f"train-lr{index % 12}", user="root",
            script=f"/home/user/runs/train-{index % 12}.sbatch", sbatch_args=["--mem=32G", "--gres=gpu:1"],
            submit_dir="/home/user/runs", stdout_path=f"/home/user/runs/slurm-{FAKE_JOB_BASE + index}.out",
            stderr_path=f"/home/user/runs/slurm-{FAKE_JOB_BASE + index}.out", created_at=created,
            monitor=MonitorInfo(pid=pid, start_ticks=100_000 + index, host=host, started_at=created,
                                heartbeat=now - 900, heartbeat_deadline=now - 750),
            observation=Observation(state=JobState.RUNNING, seen_at=now - 900),
        )
        if index % 5 < 2:
            state_name, exit_code, route, categories = outcomes[index % 3]
            record.final = FinalRecord(state=state_name, state_text=state_name.value, exit_code=exit_code,
                                       elapsed="01:12:03", time_limit="1-00:00:00", max_rss_bytes=31 << 30,
                                       req_mem="32G", nodes="gpu-node07", partition="gpu", decided_at=now - 3600)
            record.categories = categories
            sent = SinkDelivery(status=DeliveryStatus.DELIVERED, attempts=1, delivered_at=now - 3590)
            record.outbox = [OutboxEntry(f"{record.job_id}:final:1", EventKind.FINAL, route, created_at=now - 3600,
                                         routed_at=now - 3600, deliveries={f"discord-{route.value}": sent})]
        store.create(record)


def measure_status(plan: Plan, root: str) -> List[Row]:
    with Sandbox(root, "status", DEFAULT_RUNNING_INTERVAL) as box:
        state = os.path.join(box.home, "state")
        write_state_files(state, STATUS_FILES)
        times = []
        before = box.calls()
        for _ in range(plan.status_runs):
            snapshot = os.path.join(state, QUEUE_FILE)
            if os.path.exists(snapshot):
                os.remove(snapshot)  # each run pays for its squeue: no monitor refreshed it for us
            start = time.perf_counter()
            done = box.jobmon("status")
            times.append(time.perf_counter() - start)
            if done.returncode != 0 or done.stdout.count("\n") <= STATUS_FILES:
                raise RuntimeError(f"jobmon status failed or showed too few rows: {done.stderr[-500:]}")
        calls = (box.calls() - before) / plan.status_runs
    squeue_times = []
    for index in range(SQUEUE_SAMPLES):
        start = time.perf_counter()
        subprocess.run([SQUEUE, "-t", "all", "-j", str(FAKE_JOB_BASE + index), "-o", squeue_format()],
                       capture_output=True, timeout=60)
        squeue_times.append(time.perf_counter() - start)
    took = statistics.median(times)
    naive = STATUS_FILES * statistics.median(squeue_times)
    note = (f"`jobmon status` through the entry point, {STATUS_FILES:,} state files (60 % running, 40 % ended "
            f"today; every monitor pid dead), median of {plan.status_runs} runs, shared squeue snapshot deleted "
            f"before each. Naive: one `squeue -h -t all -j ID` per row; its time is {STATUS_FILES:,} x the median "
            f"of {SQUEUE_SAMPLES} real calls (extrapolated, squeue alone).")
    return [
        Row(6, f"6. squeue calls per `jobmon status`, {STATUS_FILES:,} rows", f"{calls:g}", f"{STATUS_FILES:,}",
            ratio(STATUS_FILES, calls), note),
        Row(6, f"6. `jobmon status` wall time, {STATUS_FILES:,} rows", duration(took), duration(naive),
            ratio(naive, took), note),
    ]


# -- the run ----------------------------------------------------------------------------------
def run_part(title: str, measure: Callable[[], List[Row]], section: int) -> List[Row]:
    """One part of the benchmark; a failure becomes an error row so the other figures still print."""
    print(f"bench: {title} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        rows = measure()
    except Exception as exc:  # one broken part must not cost the figures of the others
        traceback.print_exc()
        return [Row(section, f"{section}. {title}", "error", "error", "-", f"{type(exc).__name__}: {exc}")]
    print(f"bench: {title} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="~4 min: polling at 5 s scaled to 30 s, fewer jobs, no 2 GiB whole-file read")
    plan = Plan(parser.parse_args(argv).quick)
    if not slurm_is_up():
        print("bench: Slurm is not running; start it with `bash scripts/slurm-local.sh setup` (as root)",
              file=sys.stderr)
        return 1
    root = tempfile.mkdtemp(prefix=f"{TAG}-")
    children: List[subprocess.Popen] = []
    rows: List[Row] = []
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    parts = [
        ("reading the last lines of a log", lambda: measure_log_tail(plan, root), 3, False),
        ("analyzer", lambda: measure_analyzer(plan), 4, False),
        ("squeue+sacct calls", lambda: measure_polling(plan, root), 1, True),
        ("idle daemon memory", lambda: measure_memory(root, children), 2, True),
        (f"notification delay at {DEFAULT_RUNNING_INTERVAL:g} s",
         lambda: measure_delay(plan, root, DEFAULT_RUNNING_INTERVAL), 5, True),
        (f"notification delay at {SHORT_INTERVAL:g} s", lambda: measure_delay(plan, root, SHORT_INTERVAL), 5, True),
        ("jobmon status", lambda: measure_status(plan, root), 6, True),
    ]
    code = 0
    waited = 0.0
    try:
        for title, measure, section, slurm in parts:
            if slurm:
                waited += wait_for_integration_tests()
            rows += run_part(title, measure, section)
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
        code = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        cleanup(root, children)
    mode = "--quick" if plan.quick else "full run"
    took = f"{time.monotonic() - started - waited:.0f} s"
    if waited:
        took += f" + {waited:.0f} s waiting for integration tests"
    print_rows(rows, f"jobmon benchmark ({mode}, {took}) on {socket.gethostname()}, {os.cpu_count()} CPUs, "
                      f"single-node Slurm")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
