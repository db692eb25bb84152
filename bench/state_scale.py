#!/usr/bin/env python3
"""How `jobmon status`, `history` and `recover` scale with a big state folder, and the first use of a
schema-1 folder, printed as one table with the targets next to the figures.

    python3 bench/state_scale.py            # a few minutes: 100,000 old records, a 50,000-file schema-1 folder
    python3 bench/state_scale.py --quick    # ~1 min: 20,000 old records, a 10,000-file schema-1 folder

Run from the checkout, as root or any user; Slurm is optional (`status` asks squeue once for its live
rows; without Slurm it prints a warning and the run goes on, and the table says which it was). The
benchmark runs itself under the checkout's .venv python (requests + filelock), and jobmon as real
subprocesses of that python on jobmon.py, JOBMON_HOME in a temp folder under /tmp that is removed at
the end, also on Ctrl-C (or SIGTERM). Before each part it waits until no `pytest tests/integration`
runs (those load the CPUs and restart Slurm). Wall times are the median (min, max) of several runs with
a warm page cache; each `status` run first deletes the shared squeue snapshot, so each pays its squeue call.

State folders are written directly, not through StateStore.create (which fsyncs every file): record
files with format_record, history lines with History.append, index markers (`state/active/<job>`)
and layout.json, plus the empty `.lock`, `.monitor.lock` (and, for a job whose messages went out,
`.deliver.lock`) files real use leaves. The records are the real schema-1 fixtures of
tests/fixtures/state_v1 with new job ids (chains and arrays keep their attempts and tasks apart),
names, times and some end states (TIMEOUT, CANCELLED), upgraded as jobmon upgrades them when reading.

1. `jobmon status` over 100,000 records of jobs that ended 8 to 29 days ago (not in the index, in
   the history), 1,000 ended today (indexed, messages delivered) and 100 live (indexed, no final
   record, each monitor pid a `sleep` process of the benchmark on this host: ALIVE); and over a
   folder with only those 1,100. Targets: <= 0.5 s, and within 2x of the 1,100-record folder.
2. `jobmon history --since 30d` over the same folder (the 100,000 and the 1,100). Target: <= 5 s.
3. `jobmon recover` over the same folder, with nothing to do. Target: <= 1 s.
4. `jobmon status` with 2,000, 4,000 and 8,000 records ended today, and the ratio per doubling:
   about 2 is linear, 4 quadratic (the code before the index took 3.7 s and 14.9 s for 2,000 and 4,000).
5. A schema-1 folder of 50,000 record files (most ended 2 to 200 days ago, some today, a few running
   or with a message not delivered), as the previous jobmon left it: the first `jobmon status` (it
   builds the index and the history) and the second; then every job id is looked for in the index
   (os.listdir) and in the history (core.state.history.History.read): none may be lost.
6. Peak RSS of `jobmon status` in case 1, from /usr/bin/time -f %M (not os.wait4 or RUSAGE_CHILDREN:
   Linux counts into a child's peak the parent's RSS at fork/exec, here the benchmark's own hundreds
   of MB): for information.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from sandbox import ROOT, print_table, slurm_is_up, terminate, wait_for_integration_tests

VENV = os.path.join(ROOT, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
if os.path.realpath(sys.prefix) != os.path.realpath(VENV) and __name__ == "__main__":
    os.execv(PYTHON, [PYTHON, os.path.abspath(__file__), *sys.argv[1:]])  # History.append locks with filelock

sys.path.insert(0, ROOT)

from core.daemon.liveness import process_start_ticks, this_host  # noqa: E402
from core.files import atomic_write_text  # noqa: E402
from core.notify import outbox  # noqa: E402
from core.slurm.shared import QUEUE_FILE  # noqa: E402
from core.state.codec import decode  # noqa: E402
from core.state.history import History, summarize  # noqa: E402
from core.state.migrate import upgrade  # noqa: E402
from core.state.model import JobRecord  # noqa: E402
from core.state.store import LAYOUT_VERSION, format_record  # noqa: E402

JOBMON = os.path.join(ROOT, "jobmon.py")
TIME = "/usr/bin/time"
RSS_RUNS = 3
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "state_v1")
DAY = 86400.0
TODAY = 1000
LIVE = 100
DOUBLING = (2000, 4000, 8000)
#: Plain jobs outnumber chains and arrays in real use: how many copies of each fixture one cycle takes.
WEIGHTS = {"completed_sent": 4, "watch_completed_sent": 2, "failed_cuda_oom_sent": 2}
#: Every 5th plain COMPLETED copy ends TIMEOUT instead, and as many CANCELLED.
OTHER_ENDS = {1: "TIMEOUT", 3: "CANCELLED"}
#: Job ids: each record gets a block this wide (a chain's or an array's own ids stay inside it).
ID_STEP = 8
FIRST_ID = 1_000_000
V1_FIRST_ID = 5_000_000
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
_CLOCKISH = re.compile(r"^[\d.:-]*:[\d.:-]*$")  # elapsed and time limits: never job ids
LOCKS = ("lock", "monitor.lock")


@dataclass(frozen=True)
class Plan:
    quick: bool

    @property
    def old(self) -> int:
        return 20_000 if self.quick else 100_000

    @property
    def schema1(self) -> int:
        return 10_000 if self.quick else 50_000

    @property
    def runs(self) -> int:
        return 3 if self.quick else 7


@dataclass(frozen=True)
class Row:
    section: int
    measure: str
    median: str
    low: str = ""
    high: str = ""
    target: str = ""
    result: str = ""
    note: str = ""


@dataclass(frozen=True)
class Run:
    """One jobmon subprocess: its wall time, exit code and output."""

    seconds: float
    code: int
    stdout: str
    stderr: str


# -- records from the real fixtures ---------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """One real schema-1 record, and what it takes to make new ones like it."""

    name: str
    text: str
    ids: Tuple[int, ...]  # every Slurm job id it names (its own, its chain's, its tasks' raw ids)
    created_at: float
    finished: bool  # done or cancelled, nothing undelivered: it leaves the index a day after its end

    @property
    def id_pattern(self) -> re.Pattern:
        return re.compile(r"(?<![0-9A-Za-z])(" + "|".join(map(str, self.ids)) + r")(?![0-9])")


def slurm_ids(data: Dict[str, Any]) -> Tuple[int, ...]:
    chain = data.get("chain") or {}
    found = {data["job_id"], chain.get("current_job", "")}
    found.update(attempt["job_id"] for attempt in chain.get("attempts", []))
    found.update(sub.get("job_id", "") for sub in (chain.get("pending") or {}).get("submissions", []))
    for task in data.get("tasks", []):
        found.update((task["raw_id"], task["job_id"].partition("_")[0]))
    for arg in data.get("sbatch_args", []):
        if arg.startswith("--dependency="):
            found.update(re.findall(r"(?<=:)\d+", arg))
    return tuple(sorted(int(job) for job in found if job.isdigit()))


def load_templates() -> List[Template]:
    templates = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.json"))):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        data = json.loads(text)
        record = decode(JobRecord, upgrade(json.loads(text)))
        finished = (record.done or record.cancelled) and not outbox.has_undelivered(record.outbox)
        templates.append(Template(os.path.basename(path)[:-5], text, slurm_ids(data), data["created_at"], finished))
    return templates


def weighted(templates: Iterable[Template]) -> List[Template]:
    return [t for t in templates for _ in range(WEIGHTS.get(t.name, 1))]


def copy_of(template: Template, job_id: int, created_at: float, index: int) -> Dict[str, Any]:
    """The template's schema-1 data as another job: new ids, times shifted, another name, maybe another end."""
    shift = created_at - template.created_at
    mapping = {str(old): str(job_id + old - template.ids[0]) for old in template.ids}
    pattern = template.id_pattern

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, float) and abs(value - template.created_at) < DAY:
            return value + shift
        if isinstance(value, str) and _ISO.match(value):
            moved = datetime.datetime.fromisoformat(value) + datetime.timedelta(seconds=round(shift))
            return moved.isoformat()
        if isinstance(value, str) and not _CLOCKISH.match(value):
            return pattern.sub(lambda match: mapping[match.group(1)], value)
        return value

    data = convert(json.loads(template.text))
    data["name"] = f"{data['name']}-{index % 37}"
    final = data.get("final")
    other = OTHER_ENDS.get(index % 5)
    if other and final and final["state"] == "COMPLETED" and not data.get("chain") and not data["array_spec"]:
        final["state"] = final["state_text"] = data["observation"]["state"] = other
        data["notification"]["channel"] = "error"
    return data


def running_copy(data: Dict[str, Any], pid: int, now: float) -> Dict[str, Any]:
    """A copy as it looks while its job runs (a chain: its last attempt), watched by `pid` on this host."""
    data.update(final=None, done=False, tasks=[], categories=[], findings=[], excerpt="", first_failure_notified=False)
    data["notification"].update(status="none", attempts=0, sent_at=0.0, message_id="")
    data["observation"].update(state="RUNNING", final_seen_at=0.0, seen_at=now - 20)
    data["monitor"].update(pid=pid, start_ticks=process_start_ticks(pid) or 0, host=this_host(), stop_requested=False,
                           heartbeat=now - 20, heartbeat_deadline=now + 400)
    chain = data.get("chain")
    if chain:
        chain["pending"] = {}
        chain["attempts"][-1].update(state="", decision="", elapsed="", categories=[])
    return data


def spread(count: int, start: float, end: float) -> List[float]:
    """`count` submission times from `start` to `end`, in order (so job ids grow with time, as Slurm's do)."""
    step = (end - start) / max(1, count)
    return [start + index * step for index in range(count)]


class Generator:
    """New records from the fixtures, each with its own block of job ids."""

    def __init__(self, first_id: int) -> None:
        self.templates = load_templates()
        self.finished = weighted(t for t in self.templates if t.finished)
        self.unfinished = [t for t in self.templates if not t.finished]
        self.next_id = first_id

    def take_id(self) -> int:
        self.next_id += ID_STEP
        return self.next_id

    def finished_copies(self, times: Sequence[float]) -> Iterator[Dict[str, Any]]:
        for index, when in enumerate(times):
            yield copy_of(self.finished[index % len(self.finished)], self.take_id(), when, index)

    def running_copies(self, times: Sequence[float], pids: Sequence[int], now: float) -> Iterator[Dict[str, Any]]:
        for index, data in enumerate(self.finished_copies(times)):
            yield running_copy(data, pids[index % len(pids)], now)

    def unfinished_copies(self, times: Sequence[float]) -> Iterator[Dict[str, Any]]:
        """Copies of the fixtures caught mid-way (pending chain decisions, a message being sent or gone)."""
        for index, when in enumerate(times):
            yield copy_of(self.unfinished[index % len(self.unfinished)], self.take_id(), when, index)


# -- writing state folders ------------------------------------------------------------------------
def touch(path: str, mode: int) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, mode))


def write_file(path: str, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)


def write_v1(state: str, data: Dict[str, Any]) -> None:
    """A record file as the previous jobmon wrote it, with its lock files."""
    job_id = data["job_id"]
    write_file(os.path.join(state, f"{job_id}.json"), json.dumps(data, indent=1, sort_keys=True))
    for kind in LOCKS:
        touch(os.path.join(state, f"{job_id}.{kind}"), 0o644)


def write_v2(state: str, copies: Iterable[Dict[str, Any]], *, current: bool, now: float) -> int:
    """Records as this jobmon leaves them: current ones indexed, the others summarised in the history."""
    os.makedirs(os.path.join(state, "active"), mode=0o700, exist_ok=True)
    summaries = []
    count = 0
    for data in copies:
        record = decode(JobRecord, upgrade(data))
        if record.is_current(now) != current:
            raise AssertionError(f"generated job {record.job_id} is_current={not current}, expected {current}")
        write_file(os.path.join(state, f"{record.job_id}.json"), format_record(record))
        delivered = any(entry.deliveries for entry in record.outbox)
        for kind in (*LOCKS, "deliver.lock") if delivered else LOCKS:
            touch(os.path.join(state, f"{record.job_id}.{kind}"), 0o644)
        if current:
            touch(os.path.join(state, "active", record.job_id), 0o600)
        else:
            summaries.append(summarize(record))
        count += 1
    History(state).append(summaries)
    atomic_write_text(os.path.join(state, "layout.json"), json.dumps({"layout": LAYOUT_VERSION}) + "\n")
    return count


def disk_use(folder: str) -> Tuple[int, int]:
    """(bytes allocated, files) under a folder."""
    total = files = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            total += os.lstat(os.path.join(parent, name)).st_blocks * 512
            files += 1
    return total, files


# -- running jobmon -------------------------------------------------------------------------------
def jobmon_env(home: str) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBMON_")}
    env["JOBMON_HOME"] = home
    return env


def forget_squeue(home: str) -> None:
    """Delete the shared squeue snapshot: the next `status` pays its own squeue call."""
    try:
        os.remove(os.path.join(home, "state", QUEUE_FILE))
    except FileNotFoundError:
        pass


def jobmon(home: str, *args: str) -> Run:
    """`jobmon ARGS` with JOBMON_HOME=home, through the checkout's .venv python."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        done = subprocess.run([PYTHON, JOBMON, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              env=jobmon_env(home), cwd=home)
        took = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Run(took, done.returncode, out.read(), err.read())


def peak_rss_kib(home: str, *args: str) -> int:
    """Peak RSS of one `jobmon ARGS`, as /usr/bin/time (a small process) measures its own child."""
    with tempfile.NamedTemporaryFile("r") as report:
        done = subprocess.run([TIME, "-f", "%M", "-o", report.name, PYTHON, JOBMON, *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=jobmon_env(home), cwd=home)
        if done.returncode != 0:
            raise RuntimeError(f"jobmon {' '.join(args)} exited {done.returncode} under {TIME}")
        return int(report.read().split()[-1])


def repeat(runs: int, home: str, *args: str) -> List[Run]:
    """`runs` runs of one command; `status` runs each pay their own squeue (no shared snapshot left)."""
    results = []
    for _ in range(runs):
        forget_squeue(home)
        done = jobmon(home, *args)
        if done.code != 0:
            raise RuntimeError(f"jobmon {' '.join(args)} exited {done.code}: {done.stderr[-500:]}")
        results.append(done)
    return results


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def timing_row(section: int, measure: str, runs: Sequence[Run], limit: Optional[float] = None,
               note: str = "") -> Row:
    times = [run.seconds for run in runs]
    median = statistics.median(times)
    target = result = ""
    if limit is not None:
        target, result = f"<= {seconds(limit)}", "ok" if median <= limit else "MISSED"
    return Row(section, measure, seconds(median), seconds(min(times)), seconds(max(times)), target, result, note)


def index_size(home: str) -> int:
    return len(os.listdir(os.path.join(home, "state", "active")))


def squeue_answers(runs: Sequence[Run]) -> str:
    """How often `status` got its squeue answer, and what it said when it did not."""
    failed = [run for run in runs if "squeue unavailable" in run.stderr]
    text = f"squeue answered {len(runs) - len(failed)} of {len(runs)} status runs"
    if failed:
        slowest = max(run.seconds for run in failed)
        text += f" (slowest without it {seconds(slowest)}; it said: {failed[-1].stderr.strip()})"
    return text


# -- the measurements -----------------------------------------------------------------------------
class Bench:
    """The temp folder, the sleeping processes that stand in for live monitors, and what was seen."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.root = tempfile.mkdtemp(prefix="jobmon-state-scale-", dir="/tmp")
        self.monitors: List[subprocess.Popen] = []
        self.phases: List[str] = []
        self.problems: List[str] = []
        self.waited = 0.0  # for integration tests of others: they load the CPUs and restart Slurm

    @property
    def pids(self) -> List[int]:
        """The live records' monitor pids: one `sleep` process each, started on first use."""
        while len(self.monitors) < LIVE:
            self.monitors.append(subprocess.Popen(["sleep", "86400"], stdin=subprocess.DEVNULL))
        return [child.pid for child in self.monitors]

    def close(self) -> None:
        terminate([child.pid for child in self.monitors])
        for child in self.monitors:
            child.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def phase(self, title: str, work: Callable[[], List[Row]], section: int) -> List[Row]:
        """One part, once no integration test runs; a failure becomes an error row so the other figures still print."""
        self.waited += wait_for_integration_tests()
        print(f"bench: {title} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            rows = work()
        except Exception as exc:  # one broken part must not cost the figures of the others
            traceback.print_exc()
            rows = [Row(section, f"{section}. {title}", "error", note=f"{type(exc).__name__}: {exc}")]
            self.problems.append(f"{title}: {type(exc).__name__}: {exc}")
        line = f"{title}: {time.monotonic() - started:.0f} s"
        print(f"bench: {line}", file=sys.stderr, flush=True)
        self.phases.append(line)
        return rows

    def home(self, name: str) -> str:
        home = os.path.join(self.root, name)
        os.makedirs(os.path.join(home, "state"), mode=0o700)
        return home

    def built(self, home: str, started: float) -> None:
        size, files = disk_use(home)
        line = (f"  built {os.path.basename(home)}: {files:,} files, {size / 2**20:,.0f} MiB, "
                f"{time.monotonic() - started:.0f} s")
        print(f"bench: {line.strip()}", file=sys.stderr, flush=True)
        self.phases.append(line)

    def build_v2(self, name: str, old: int, today: int, live: int) -> str:
        started = time.monotonic()
        home = self.home(name)
        state = os.path.join(home, "state")
        now = time.time()
        make = Generator(FIRST_ID)
        write_v2(state, make.finished_copies(spread(old, now - 29 * DAY, now - 8 * DAY)), current=False, now=now)
        write_v2(state, make.finished_copies(spread(today, now - 20 * 3600, now - 3600)), current=True, now=now)
        write_v2(state, make.running_copies(spread(live, now - 6 * 3600, now - 600), self.pids, now),
                 current=True, now=now)
        self.built(home, started)
        return home

    def scale(self) -> List[Row]:
        """Cases 1, 2, 3 and 6 (the big folder and the one with only its current records)."""
        small = self.build_v2("current-only", 0, TODAY, LIVE)
        big = self.build_v2("steady", self.plan.old, TODAY, LIVE)
        runs = self.plan.runs
        start_only = repeat(runs, small, "--version")
        small_runs = repeat(runs, small, "status")
        big_runs = repeat(runs, big, "status")
        current = TODAY + LIVE
        for home, done in ((small, small_runs), (big, big_runs)):
            rows_shown = sum(1 for line in done[-1].stdout.splitlines()[1:] if line[:1].isdigit())
            alive = done[-1].stdout.count(" ALIVE ")
            if rows_shown != current or alive != LIVE or index_size(home) != current:
                self.problems.append(f"status in {os.path.basename(home)}: {rows_shown} rows, {alive} ALIVE, "
                                     f"{index_size(home)} indexed; expected {current}, {LIVE}, {current}")
        slurm = (f"{squeue_answers(big_runs + small_runs)}; scontrol ping afterwards: "
                 f"{'UP' if slurm_is_up() else 'no answer'}")
        total = self.plan.old + current
        ratio = statistics.median(r.seconds for r in big_runs) / statistics.median(r.seconds for r in small_runs)
        note1 = (f"JOBMON_HOME with {self.plan.old:,} records ended 8-29 days ago (history only), {TODAY:,} ended "
                 f"today and {LIVE} live (ALIVE: pids of the benchmark's sleep processes); median of {runs} runs, "
                 f"squeue snapshot deleted before each; {slurm}.")
        history_runs = repeat(runs, big, "history", "--since", "30d")
        listed = sum(1 for line in history_runs[-1].stdout.splitlines()[1:] if line.strip())
        if listed != total:
            self.problems.append(f"history --since 30d listed {listed:,} jobs, expected {total:,}")
        recover_runs = repeat(runs, big, "recover")
        said = recover_runs[-1].stdout.strip()
        if "nothing to recover" not in said:
            self.problems.append(f"recover had something to do: {said[:500]}")
        return [
            timing_row(1, "1. jobmon --version (interpreter start, for scale)", start_only),
            timing_row(1, f"1. status, {current:,} current records only", small_runs, note=note1),
            timing_row(1, f"1. status, {total:,} records ({current:,} current)", big_runs, 0.5, note1),
            Row(1, f"1. status {total:,} / status {current:,}", f"{ratio:.2f}x", target="<= 2x",
                result="ok" if ratio <= 2 else "MISSED", note=note1),
            timing_row(2, f"2. history --since 30d, {total:,} jobs listed", history_runs, 5.0,
                       f"same folder, table output ({listed:,} rows), median of {runs} runs."),
            timing_row(3, f"3. recover, {total:,} records, nothing to do", recover_runs, 1.0,
                       f"same folder; it printed: {said[:120]}"),
            *self.memory([(small, f"{current:,} current records only"), (big, f"{total:,} records")]),
        ]

    def memory(self, cases: Sequence[Tuple[str, str]]) -> List[Row]:
        """Case 6: peak RSS of `status` in each (JOBMON_HOME, label)."""
        note = f"{TIME} -f %M around `jobmon status`, {RSS_RUNS} runs each (squeue snapshot deleted before each)."
        if not os.access(TIME, os.X_OK):
            return [Row(6, "6. status peak RSS", f"skipped: no {TIME}", result="info")]
        rows = []
        for home, label in cases:
            peaks = []
            for _ in range(RSS_RUNS):
                forget_squeue(home)
                peaks.append(peak_rss_kib(home, "status"))
            rows.append(Row(6, f"6. status peak RSS, {label}", f"{statistics.median(peaks) / 1024:.1f} MiB",
                            f"{min(peaks) / 1024:.1f} MiB", f"{max(peaks) / 1024:.1f} MiB", "-", "info", note))
        return rows

    def doubling(self) -> List[Row]:
        """Case 4: status with more and more records ended today."""
        rows: List[Row] = []
        previous = 0.0
        for count in DOUBLING:
            home = self.build_v2(f"today-{count}", 0, count, 0)
            runs = repeat(self.plan.runs, home, "status")
            median = statistics.median(r.seconds for r in runs)
            note = (f"only records ended today (indexed, delivered), no live ones; status still asks squeue once, "
                    f"for the cancelled ones (no final record); median of {self.plan.runs} runs. The code before "
                    f"the index: 3.7 s for 2,000, 14.9 s for 4,000 (x4.0).")
            rows.append(timing_row(4, f"4. status, {count:,} records ended today", runs, note=note))
            if previous:
                ratio = median / previous
                rows.append(Row(4, f"4. status {count:,} / status {count // 2:,}", f"{ratio:.2f}x",
                                target="< 2.8x (linear 2x, quadratic 4x)", result="ok" if ratio < 2.8 else "MISSED",
                                note=note))
            previous = median
            shutil.rmtree(home)
        return rows

    def schema1(self) -> List[Row]:
        """Case 5: a folder of the previous jobmon on its first use."""
        started = time.monotonic()
        home = self.home("schema1")
        state = os.path.join(home, "state")
        count = self.plan.schema1
        now = time.time()
        make = Generator(V1_FIRST_ID)
        running, unfinished = count // 100, count // 100
        recent = count // 10
        old = count - running - unfinished - recent
        ids = set()
        for data in itertools.chain(make.finished_copies(spread(old, now - 200 * DAY, now - 2 * DAY)),
                                    make.finished_copies(spread(recent, now - 20 * 3600, now - 3600)),
                                    make.unfinished_copies(spread(unfinished, now - 20 * 3600, now - 3600)),
                                    make.running_copies(spread(running, now - 6 * 3600, now - 600), self.pids, now)):
            write_v1(state, data)
            ids.add(data["job_id"])
        self.built(home, started)
        first = jobmon(home, "status")
        second = jobmon(home, "status")
        for which, done in (("first", first), ("second", second)):
            if done.code != 0:
                self.problems.append(f"schema-1 folder, {which} status exited {done.code}: {done.stderr[-500:]}")
        indexed = set(os.listdir(os.path.join(state, "active")))
        history = set(History(state).read())
        kept = ids & (indexed | history)
        lost = len(ids) - len(kept)
        if lost:
            self.problems.append(f"schema-1 upgrade lost {lost:,} of {len(ids):,} records, e.g. "
                                 f"{sorted(ids - kept)[:5]}")
        note = (f"{count:,} schema-1 files ({old:,} ended 2-200 days ago, {recent:,} ended today, {unfinished:,} "
                f"caught mid-way: pending chain decisions, a message being sent or to a deleted webhook; "
                f"{running:,} running), with their .lock and .monitor.lock files; the first status builds the "
                f"index and the history. Afterwards {len(indexed & ids):,} ids in the index, "
                f"{len(history & ids):,} in the history, {len(indexed & history & ids):,} in both.")
        rows = [
            Row(5, f"5. first status, {count:,} schema-1 files (upgrade)", seconds(first.seconds), target="-",
                result="info", note=note),
            Row(5, "5. second status on that folder", seconds(second.seconds), target="-", result="info", note=note),
            Row(5, "5. records found after the upgrade", f"{len(kept):,} of {len(ids):,}", target="all",
                result="ok" if not lost else f"{lost:,} LOST", note=note),
        ]
        shutil.rmtree(home)
        return rows


# -- the table ------------------------------------------------------------------------------------
def print_rows(rows: Sequence[Row], title: str) -> None:
    print_table(title, ["measure", "median", "min", "max", "target", "result"],
                [(row.section, row.measure, [row.median, row.low, row.high, row.target, row.result], row.note)
                 for row in rows])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~1 min: 20,000 old records, 10,000 schema-1 files")
    plan = Plan(parser.parse_args(argv).quick)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    rows: List[Row] = []
    code = 0
    bench = Bench(plan)
    try:
        rows += bench.phase("status, history and recover over a big folder", bench.scale, 1)
        rows += bench.phase("status with 2,000 / 4,000 / 8,000 records", bench.doubling, 4)
        rows += bench.phase("first use of a schema-1 folder", bench.schema1, 5)
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
        code = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        bench.close()
    mode = "--quick" if plan.quick else "full run"
    took = f"{time.monotonic() - started - bench.waited:.0f} s"
    if bench.waited:
        took += f" + {bench.waited:.0f} s waiting for integration tests"
    who = "root" if os.getuid() == 0 else f"uid {os.getuid()}"
    print_rows(rows, f"jobmon state folder scale ({mode}, {took}) on {this_host()}, {os.cpu_count()} CPUs, as {who}")
    print("phases:")
    for line in bench.phases:
        print(f"  {line}")
    for problem in bench.problems:
        print(f"PROBLEM: {problem}")
    return code or (1 if bench.problems else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
