"""The benchmark's Slurm world: throw-away JOBMON_HOMEs, local Discord receivers, squeue/sacct
wrappers that count calls, and clean-up of every job and daemon the benchmark started.

Every benchmark job is named TAG (unique per run), and every daemon inherits a JOBMON_HOME inside
the run's temp folder: `cleanup` finds both by that, so even a Ctrl-C halfway through `jobmon
submit` leaves no job or daemon behind.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from discord_receiver import DiscordReceiver  # noqa: E402

JOBMON = os.path.join(ROOT, "jobmon")
TAG = f"jobmon-bench-{os.getpid()}"
#: The real Slurm commands, resolved before any wrapper folder goes on a PATH.
SQUEUE = shutil.which("squeue") or "/usr/bin/squeue"
SACCT = shutil.which("sacct") or "/usr/bin/sacct"
SCANCEL = shutil.which("scancel") or "/usr/bin/scancel"
COUNTED = {"squeue": SQUEUE, "sacct": SACCT}
#: `jobmon submit`s run at once: a user pasting a loop into a shell, a bit faster.
SUBMIT_WORKERS = 4
#: The daemon's module with `requests` imported first: the daemon as it would be without lazy imports.
HEAVY_DAEMON = ("import requests, runpy, sys; "
                "runpy.run_module('core.daemon', run_name='__main__', alter_sys=True)")


def print_table(title: str, header: Sequence[str], rows: Sequence[Tuple[int, str, Sequence[str], str]]) -> None:
    """Rows (section, measure, cells, note) under one header, each note once as a numbered footnote below."""
    notes: List[str] = []
    body = []
    for _section, measure, cells, note in sorted(rows, key=lambda r: r[0]):
        if note:
            if note not in notes:
                notes.append(note)
            measure += f" [{notes.index(note) + 1}]"
        body.append([measure, *cells])
    table = [list(header)] + body
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    print(title)
    print(rule)
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if index == 0:
            print(rule)
    print(rule)
    for number, note in enumerate(notes, 1):
        print(f"[{number}] {note}")


def wait_for_integration_tests() -> float:
    """Do not disturb another engineer's real-Slurm test run: wait until none runs; returns the wait."""
    started = time.monotonic()
    announced = False
    while subprocess.run(["pgrep", "-f", "pytest tests/integration"], capture_output=True).returncode == 0:
        if not announced:
            print("bench: waiting for the running integration tests to finish ...", file=sys.stderr, flush=True)
            announced = True
        time.sleep(10)
    return time.monotonic() - started


def slurm_is_up() -> bool:
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "UP" in done.stdout


def job_script(folder: str, seconds: float) -> str:
    path = os.path.join(folder, f"sleep-{seconds:g}.sbatch")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"#!/bin/bash\n#SBATCH -o /dev/null\nsleep {seconds:g}\n")
    return path


class Sandbox:
    """One JOBMON_HOME with its receiver and counting wrappers; stops its daemons and jobs on exit."""

    def __init__(self, root: str, name: str, interval: float) -> None:
        self.home = os.path.join(root, name)
        self.bin = os.path.join(self.home, "bin")
        self.calls_log = os.path.join(self.home, "slurm-calls.log")
        os.makedirs(self.bin)
        for command, real in COUNTED.items():
            wrapper = os.path.join(self.bin, command)
            with open(wrapper, "w", encoding="utf-8") as handle:
                handle.write(f'#!/bin/sh\necho "{command} $*" >> {self.calls_log}\nexec {real} "$@"\n')
            os.chmod(wrapper, 0o755)
        open(self.calls_log, "w").close()
        self.receiver = DiscordReceiver()
        self.receiver.start()
        with open(os.path.join(self.home, "config.json"), "w", encoding="utf-8") as handle:
            json.dump({"discord": {"success_webhook": self.receiver.webhook_url("success"),
                                   "error_webhook": self.receiver.webhook_url("error")}}, handle)
        os.chmod(os.path.join(self.home, "config.json"), 0o600)
        self.interval = interval
        self.env = dict(os.environ, JOBMON_HOME=self.home, PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                        JOBMON_POLL_INTERVAL=str(interval), JOBMON_PENDING_INTERVAL=str(interval))
        self.jobs: List[str] = []
        self.daemons: Dict[str, int] = {}  # job id -> pid of its daemon

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def jobmon(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([JOBMON, *args], capture_output=True, text=True, env=self.env, cwd=self.home,
                              timeout=timeout)

    def submit_one(self, script: str, *options: str) -> str:
        done = self.jobmon("submit", "-J", TAG, *options, script)
        if done.returncode != 0 or "Submitted batch job " not in done.stdout:
            raise RuntimeError(f"jobmon submit failed: {done.stdout}{done.stderr}")
        job_id = done.stdout.split("Submitted batch job ", 1)[1].split()[0]
        self.jobs.append(job_id)
        self.daemons[job_id] = int(re.search(r"daemon pid (\d+)", done.stdout).group(1))
        return job_id

    def submit(self, scripts: Sequence[str]) -> List[str]:
        """`jobmon submit` each script (a few at once); returns the job ids in the scripts' order."""
        with ThreadPoolExecutor(SUBMIT_WORKERS) as pool:
            return list(pool.map(self.submit_one, scripts))

    def calls(self) -> int:
        """squeue + sacct invocations through the wrappers so far."""
        with open(self.calls_log, encoding="utf-8") as handle:
            return sum(1 for _ in handle)

    def record(self, job_id: str) -> dict:
        with open(os.path.join(self.home, "state", f"{job_id}.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def wait_polls(self, job_ids: Sequence[str], polls: int) -> None:
        """Wait until each job's current daemon has polled at least `polls` times (one heartbeat each)."""
        beats: Dict[str, set] = {job: set() for job in job_ids}
        deadline = time.monotonic() + (polls + 1) * self.interval * 3 + 60
        while any(len(seen) < polls for seen in beats.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemons did not poll {polls} times within the deadline: {beats}")
            for job, seen in beats.items():
                try:
                    monitor = self.record(job)["monitor"]
                except (OSError, ValueError):
                    continue  # being replaced right now
                if monitor["pid"] == self.daemons[job]:
                    seen.add(monitor["heartbeat"])
            time.sleep(0.1)

    def start_heavy_daemon(self, job_id: str) -> subprocess.Popen:
        """Replace the job's daemon by the same daemon with `requests` imported at start."""
        old = self.daemons[job_id]
        interpreter = daemon_interpreter(old)
        terminate([old])
        env = dict(self.env, PYTHONPATH=ROOT)
        with open(os.path.join(self.home, "logs", f"{job_id}.monitor.log"), "a", encoding="utf-8") as log:
            heavy = subprocess.Popen([interpreter, "-c", HEAVY_DAEMON, job_id], env=env, cwd="/", stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.daemons[job_id] = heavy.pid
        return heavy

    def queue_states(self) -> Tuple[int, int]:
        """(running, pending) among this sandbox's jobs, asked without going through the wrappers."""
        done = subprocess.run([SQUEUE, "-h", "-j", ",".join(self.jobs), "-o", "%T"], capture_output=True,
                              text=True, timeout=60)
        states = done.stdout.split()
        return states.count("RUNNING"), states.count("PENDING")

    def close(self) -> None:
        terminate(daemons_under(self.home))
        cancel_jobs(self.jobs)
        self.receiver.stop()


def daemon_interpreter(pid: int) -> str:
    """The interpreter path a process was started with (a venv's python keeps its site-packages)."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().split(b"\0", 1)[0].decode()


def daemons_under(folder: str) -> List[int]:
    """Pids of jobmon daemons whose JOBMON_HOME lies inside `folder` (only the benchmark's own)."""
    marker = f"JOBMON_HOME={folder}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if b"core.daemon" in cmdline and any(item.startswith(marker) for item in environ):
            pids.append(int(name))
    return pids


def terminate(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM (a daemon stops at once), then SIGKILL whatever is still there after `grace`."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _exists(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def cancel_jobs(job_ids: Sequence[str] = ()) -> None:
    """scancel these jobs and every job named TAG, then wait until none is pending or running."""
    if job_ids:
        subprocess.run([SCANCEL, *job_ids], capture_output=True, timeout=60)
    subprocess.run([SCANCEL, f"--name={TAG}", f"--user={os.getuid()}"], capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run([SQUEUE, "-h", f"--name={TAG}", "-o", "%i"], capture_output=True, text=True,
                              timeout=60)
        if done.returncode == 0 and not done.stdout.strip():
            return
        time.sleep(0.5)
    print(f"bench: warning: jobs named {TAG} still in squeue after scancel", file=sys.stderr)


def cleanup(root: str, children: Sequence[subprocess.Popen]) -> None:
    """Stop everything the run started: its own child processes, daemons, jobs; then its files."""
    terminate([child.pid for child in children if child.poll() is None])
    for child in children:
        child.wait()
    terminate(daemons_under(root))
    if slurm_is_up():
        cancel_jobs()
    shutil.rmtree(root, ignore_errors=True)


def sacct_end_times(job_ids: Sequence[str]) -> Dict[str, float]:
    """Job end time (epoch seconds, 1 s resolution) by job id, from sacct's allocation rows."""
    done = subprocess.run([SACCT, "-X", "-n", "-P", "-j", ",".join(job_ids), "--format=JobID,End"],
                          capture_output=True, text=True, check=True, timeout=60)
    ends = {}
    for line in done.stdout.splitlines():
        job_id, _, end = line.partition("|")
        if end and end not in ("Unknown", "None"):
            ends[job_id] = datetime.datetime.fromisoformat(end).timestamp()
    return ends


def memory_kib(pid: int) -> Tuple[int, int]:
    """(RSS, private = Private_Clean + Private_Dirty) of a process, in KiB."""
    fields: Dict[str, int] = {}
    for path in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
        with open(path, encoding="ascii") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["Private_Clean"] + fields["Private_Dirty"]


def maps_library(pid: int, name: str) -> bool:
    """Whether a shared object whose file name contains `name` is mapped into the process."""
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
        return any(name in os.path.basename(line.split()[-1]) for line in handle if "/" in line)
