"""Live usage and output files (issue 11 parts 1-2): sstat and nvidia-smi parsed on captured text, the
config, one shared sstat for every monitor, and a running job's story with a fake clock: one warning
per threshold, none from an unknown value."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from typing import Dict, List, Sequence

import pytest

from core.config import GpuQuery, HealthConfig, UsageConfig, parse_health
from core.errors import ConfigError, JobmonError, SlurmError, SlurmUnavailable
from core.monitor.checks import CPU_LOW_AFTER, disk_critical, disk_low, sampler
from core.monitor.live import health_flags
from core.monitor.usage import free_space, look_at_files
from core.slurm.client import Slurm
from core.slurm.model import AccountingRecord, CommandResult, QueueEntry
from core.slurm.parse import REQUEST_FIELDS, SACCT_DELIMITER, SSTAT_FIELDS, parse_squeue
from core.slurm.shared import SharedSlurm, UsageSnapshot
from core.slurm.usage import JobUsage, parse_gpu_csv, parse_sstat
from core.state.model import DiskSpace, LiveState, Usage, WatchedFiles
from core.views.status import files_json, progress_cell, usage_json
from tests.support import CONFIG, HEADERS, FakeClock, Story, accounting_text, header_line, read_text, sacct_row

K, M, G = 1024, 1024 ** 2, 1024 ** 3

# --- sstat, as Slurm 22.05 printed it (tests/fixtures/slurm_headers/README.md) ---------------------


def test_the_sstat_capture_is_read_by_its_header():
    usage = parse_sstat(read_text(HEADERS, "sstat_usage.txt"))
    # 1211: one .batch step holding 300 MiB; 1212: a .batch step and an srun step of 2 tasks
    assert usage["1211"] == JobUsage("1211", steps=1, max_rss_bytes=310104 * K, cpu_seconds=0.0)
    assert usage["1212"] == JobUsage("1212", steps=2, max_rss_bytes=2 * 2776 * K, cpu_seconds=12.0)
    assert read_text(HEADERS, "sstat_usage.txt").splitlines()[0] == "|".join(SSTAT_FIELDS) + "|"


def test_an_id_without_steps_is_only_absent():
    assert set(parse_sstat(read_text(HEADERS, "sstat_unknown_job.txt"))) == {"1211"}
    assert "couldn't get steps for job 99999999" in read_text(HEADERS, "sstat_unknown_job.stderr")


#: TRESUsageInAve of a GPU job's step as CU Boulder's docs show it (ResearchComputing/Documentation PR #498,
#: the same string tests/unit/test_efficiency.py reads): Slurm >= 23.02 with NVML.
GPU_AVE = ("cpu=00:56:24,energy=0,fs/disk=350130624578,gres/gpumem=40777023488,gres/gpuutil=100,"
           "mem=10621726720,pages=3465,vmem=10439041024")


@pytest.mark.parametrize(
    "row, expected",
    [
        # a 22.05 row (no GPU accounting): GPU values unknown, never 0
        ("9.batch|3748K|1|cpu=00:00:00,mem=3748K|cpu=00:00:00,mem=3748K|cpu=00:00:00,mem=3748K|",
         JobUsage("9", 1, 3748 * K, 0.0, None, None)),
        # a site with GPU accounting
        (f"9.batch|10372780K|1|{GPU_AVE}|{GPU_AVE}|{GPU_AVE}|",
         JobUsage("9", 1, 10372780 * K, 56 * 60 + 24.0, 100.0, 40777023488)),
        # a GPU idle: 0 is a value (idle), unlike an absent entry
        ("9.0|1G|4|cpu=01:00:00,gres/gpuutil=0|cpu=01:00:00,gres/gpumem=512M|cpu=04:00:00|",
         JobUsage("9", 1, 4 * G, 4 * 3600.0, 0.0, None)),
        ("9.batch||||||", JobUsage("9", 1, None, None, None, None)),  # a step that has nothing yet
    ],
)
def test_sstat_rows(row, expected):
    assert parse_sstat(header_line("sstat_usage.txt") + row + "\n") == {"9": expected}


#: `[N/A], [N/A], 0`: real nvidia-smi csv,noheader,nounits output on a GB10 (memory.used, memory.total,
#: utilization.memory), pasted in mostlygeek/llama-swap issue #782 (2026-05-23). The other lines follow the
#: documented format of `--query-gpu=utilization.gpu,memory.used,memory.total` (no GPU here to capture one).
@pytest.mark.parametrize(
    "text, expected",
    [
        ("87, 30012, 40960\n", (1, 87.0, 30012 * M, 40960 * M)),
        ("0, 0, 81920\n100, 81000, 81920\n", (2, 50.0, 81000 * M, 2 * 81920 * M)),
        ("[N/A], [N/A], 0\n", None),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", None),
        ("", None),
    ],
)
def test_nvidia_smi_csv(text, expected):
    reading = parse_gpu_csv(text)
    found = None if reading is None else (reading.gpus, reading.util_percent, reading.mem_used_bytes,
                                          reading.mem_total_bytes)
    assert found == expected


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "health, expected",
    [
        ({}, UsageConfig()),
        ({"memory_warn": "80%", "cpu_low_warn": "25%", "gpu_idle_after": "10m", "gpu_query": "srun",
          "sstat_interval": "2m", "disk_free_warn": ["2%", "50G"], "checkpoint_stale_after": "1h",
          "watch_files": ["ckpt/*.pt", "/scratch/me/*.h5"]},
         UsageConfig(0.8, 0.25, 600.0, GpuQuery.SRUN, 120.0, 0.02, 50 * G, 3600.0, ("ckpt/*.pt", "/scratch/me/*.h5"))),
        ({"memory_warn": "off", "gpu_idle_after": False, "disk_free_warn": "off"},
         replace(UsageConfig(), memory_warn=None, gpu_idle_after=None, disk_free_fraction=0.0, disk_free_bytes=0)),
        ({"disk_free_warn": "10%"}, replace(UsageConfig(), disk_free_fraction=0.1, disk_free_bytes=0)),
        ({"watch_files": "out/*.ckpt"}, replace(UsageConfig(), watch_files=("out/*.ckpt",))),
    ],
)
def test_usage_config(health, expected):
    assert parse_health({"health": health}, "c.json").usage == expected


@pytest.mark.parametrize(
    "health, words",
    [
        ({"memory_warn": "120%"}, "health.memory_warn must be a percentage"),
        ({"memory_warn": 0.9}, "health.memory_warn must be a percentage"),
        ({"cpu_low_warn": "low"}, "health.cpu_low_warn"),
        ({"gpu_query": "nvml"}, 'health.gpu_query must be "off", "sstat" or "srun"'),
        ({"gpu_idle_after": "soon"}, "health.gpu_idle_after must be seconds"),
        ({"sstat_interval": 0}, "health.sstat_interval must be at least 1 second"),
        ({"disk_free_warn": ["5%", "lots"]}, "health.disk_free_warn must be a percentage"),
        ({"disk_free_warn": "10"}, "health.disk_free_warn must be a percentage"),  # a size needs its unit
        ({"checkpoint_stale_after": 0}, "health.checkpoint_stale_after must be a positive duration"),
        ({"watch_files": [""]}, "health.watch_files must be a list of file patterns"),
    ],
)
def test_bad_usage_config_is_named(health, words):
    with pytest.raises(ConfigError, match="c.json: " + words.replace("(", r"\(")):
        parse_health({"health": health}, "c.json")


# --- the Slurm adapter and the shared snapshot ---------------------------------------------------


class Runner:
    def __init__(self, result: CommandResult) -> None:
        self.result, self.calls = result, []

    def __call__(self, argv, timeout):
        self.calls.append(list(argv))
        return self.result


def test_one_sstat_call_names_every_step_and_job():
    runner = Runner(CommandResult(0, read_text(HEADERS, "sstat_usage.txt"), ""))
    Slurm(runner).usage_text(["1211", "1212"])
    assert runner.calls == [["sstat", "-p", "-a", "--format=" + ",".join(SSTAT_FIELDS), "-j", "1211,1212"]]


@pytest.mark.parametrize(
    "result, error",
    [
        (CommandResult(1, "", "sstat: error: slurm_persist_conn_open_without_init: failed to open persistent "
                              "connection to host:localhost:6819: Connection refused\n"), SlurmUnavailable),
        (CommandResult(0, "banner text\n", ""), SlurmUnavailable),  # no header: never "no steps"
        (CommandResult(1, "", "sstat: error: Invalid field requested: \"Bogus\"\n"), SlurmError),
    ],
)
def test_a_failed_sstat_is_an_error_not_an_empty_answer(result, error):
    with pytest.raises(error):
        Slurm(Runner(result)).usage_text(["5"])


def request_rows(*rows: str) -> str:
    """sacct's answer to Slurm.request_text: REQUEST_FIELDS rows (JobID, JobName, State, User, ReqMem, AllocCPUS,
    NNodes) under their header, `|` fields joined with sacct's delimiter."""
    return "".join(SACCT_DELIMITER.join(line.split("|")) + "\n" for line in ("|".join(REQUEST_FIELDS), *rows))


class CountingSlurm:
    """sstat and sacct that count their calls; the queue snapshot lists the `running` jobs and a pending one."""

    def __init__(self, fail: str = "") -> None:
        self.usage_calls: List[List[str]] = []
        self.request_calls: List[List[str]] = []
        self.fail = fail
        self.running = ["1211", "1212"]
        self.placeholder = {"1212"}  # sacct's stub for 1212 at first

    def query_user_queue(self) -> Dict[str, QueueEntry]:
        rows = "".join(f"{job}|{state}|None|0:10|5:00|4:50|N/A|vm|N/A\n"
                       for job, state in [*((job, "RUNNING") for job in self.running), ("1213", "PENDING")])
        return {e.job_id: e for e in parse_squeue(header_line("squeue_live.txt") + rows)}

    def usage_text(self, job_ids: Sequence[str]) -> str:
        self.usage_calls.append(list(job_ids))
        if self.fail:
            raise SlurmUnavailable(self.fail)
        return read_text(HEADERS, "sstat_usage.txt")

    def request_text(self, job_ids: Sequence[str]) -> str:
        self.request_calls.append(list(job_ids))
        rows = [f"{job}|allocation|RUNNING|root|16?|2|1" if job in self.placeholder else
                f"{job}|use-mem|RUNNING|jobmon-it|400M|1|1" for job in job_ids]
        self.placeholder = set()
        return request_rows(*rows)


def test_all_monitors_share_one_sstat_per_interval(tmp_path):
    clock = FakeClock()
    slurm = CountingSlurm()
    monitors = [SharedSlurm(slurm, str(tmp_path), max_age=10.0, clock=clock.time) for _ in range(2)]
    monitors[0].queue_snapshot()
    snapshots = [monitor.usage_snapshot([job], 60.0) for monitor, job in zip(monitors, ("1211", "1212"))]
    assert slurm.usage_calls == [["1211", "1212"]]  # every running job of the user, in one call
    assert parse_sstat(snapshots[1].text)["1212"].steps == 2
    assert snapshots[1].requests == {"1211": ("400M", 1, 1)}  # 1212's placeholder is no request
    slurm.running.append("1300")  # a job that starts now waits for the next snapshot: no extra call
    clock.sleep(30.0)
    monitors[0].queue_snapshot()
    assert "1300" not in monitors[1].usage_snapshot(["1300"], 60.0).queried
    clock.sleep(29.0)
    assert len(slurm.usage_calls) == 1
    clock.sleep(2.0)
    again = monitors[1].usage_snapshot(["1300"], 60.0)
    assert slurm.usage_calls[1] == ["1211", "1212", "1300"]
    assert slurm.request_calls == [["1211", "1212"], ["1212", "1300"]]  # known requests are not asked again
    assert again.requests == {job: ("400M", 1, 1) for job in ("1211", "1212", "1300")}
    clock.sleep(61.0)
    monitors[0].usage_snapshot(["1211"], 60.0)
    assert len(slurm.request_calls) == 2  # every request known: sstat alone
    assert json.loads((tmp_path / "sstat.snapshot.json").read_text())["queried"] == ["1211", "1212", "1300"]


def test_a_failed_sstat_is_shared_as_an_error(tmp_path):
    clock = FakeClock()
    slurm = CountingSlurm(fail="sstat failed: Connection refused")
    first, second = (SharedSlurm(slurm, str(tmp_path), max_age=10.0, clock=clock.time) for _ in range(2))
    assert [m.usage_snapshot(["1211"], 60.0).error for m in (first, second)] == ["sstat failed: Connection refused"] * 2
    assert len(slurm.usage_calls) == 1


# --- files and disks -----------------------------------------------------------------------------


def test_watched_files_count_grow_and_age(tmp_path):
    (tmp_path / "ckpt").mkdir()
    for n, at in ((1, 100.0), (2, 200.0)):
        path = tmp_path / "ckpt" / f"e{n}.pt"
        path.write_bytes(b"x" * 10 * n)
        os.utime(path, (at, at))
    (tmp_path / "ckpt" / "notes.txt").write_text("not a checkpoint")
    first = look_at_files(str(tmp_path), ["ckpt/*.pt"], None)
    assert (first.count, first.total_bytes, first.growth_bytes) == (2, 30, 0)
    assert (first.newest_path, first.newest_at) == (str(tmp_path / "ckpt" / "e2.pt"), 200.0)
    (tmp_path / "ckpt" / "e3.pt").write_bytes(b"x" * 30)
    second = look_at_files(str(tmp_path), ["ckpt/*.pt", str(tmp_path / "none" / "*")], first)
    assert (second.count, second.growth_bytes) == (3, 30) and second.newest_path.endswith("e3.pt")
    assert files_json(LiveState(files=first), now=7400.0)["newest_age_seconds"] == 7200.0
    assert "last checkpoint 2h ago" in progress_cell(None, [], files_json(LiveState(files=first), now=7400.0))


def test_free_space_once_per_filesystem(tmp_path):
    (tmp_path / "a").mkdir()
    disks = free_space([str(tmp_path), str(tmp_path / "a"), str(tmp_path / "gone"), ""])
    assert [d.path for d in disks] == [str(tmp_path)] and 0 < disks[0].free_bytes <= disks[0].total_bytes


@pytest.mark.parametrize(
    "free, total, low, critical",
    [
        (20 * G, 100 * G, False, False),
        (9 * G, 100 * G, True, False),  # above 5 % but under 10G: the larger threshold counts
        (40 * G, 1000 * G, True, False),  # above 10G but under 5 %
        (900 * M, 100 * G, True, True),
        (3 * M, 4 * M, True, False),  # a small disk is always under 10G free: low
    ],
)
def test_disk_thresholds(free, total, low, critical):
    disk = DiskSpace("/w", free, total)
    assert (disk_low(disk, UsageConfig()), disk_critical(disk)) == (low, critical)


# --- a running job's story -----------------------------------------------------------------------

JOB = "4"
START = 1_000_000.0
STEP = "4.batch|{rss}|1|cpu={cpu}{gpu}|cpu={cpu}|cpu={cpu}{gpu}|\n"


def clock_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunningJob:
    """squeue says RUNNING since START; sstat answers from `usage(t)` (t: seconds since START) or fails; sacct
    gives the request from `request(t)`: (ReqMem, AllocCPUS), None for sacct's placeholder, or an error."""

    def __init__(self, clock: FakeClock, usage, ends_at: float = 3 * 3600.0) -> None:
        self.clock, self.usage, self.ends_at = clock, usage, ends_at
        self.request = lambda t: ("8G", 1)
        self.sstat_calls = self.request_calls = self.srun_calls = 0
        self.gpu_csv = None  # t -> nvidia-smi's CSV; None: srun fails (no GPU here)

    def since_start(self) -> float:
        return self.clock.time() - START

    def query_queue(self, job_ids: Sequence[str], *, not_before: float = 0.0) -> Dict[str, QueueEntry]:
        return self.query_user_queue()

    def query_user_queue(self) -> Dict[str, QueueEntry]:
        used = self.since_start()
        state = "RUNNING" if used < self.ends_at else "COMPLETED"
        row = f"{JOB}|{state}|None|{clock_text(used)}|10:00:00|{clock_text(36000 - used)}|2026-11-29T00:19:50|vm|N/A\n"
        return {e.job_id: e for e in parse_squeue(header_line("squeue_live.txt") + row)}

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        state = "RUNNING" if self.since_start() < self.ends_at else "COMPLETED"
        return accounting_text(sacct_row(JOB, state))

    def next_poll_delay(self, interval: float, job_id: str) -> float:
        return interval

    def usage_text(self, job_ids: Sequence[str]) -> str:
        self.sstat_calls += 1
        answer = self.usage(self.since_start())
        if isinstance(answer, Exception):
            raise answer
        return header_line("sstat_usage.txt") + answer

    def request_text(self, job_ids: Sequence[str]) -> str:
        self.request_calls += 1
        answer = self.request(self.since_start())
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            return request_rows(f"{JOB}|allocation|RUNNING|root|16?|1|1")
        return request_rows(f"{JOB}|train|RUNNING|alice|{answer[0]}|{answer[1]}|1")

    def gpu_text(self, job_id: str) -> str:
        self.srun_calls += 1
        if self.gpu_csv is None:
            raise SlurmError("srun nvidia-smi failed: slurmstepd-vm: error: execve(): nvidia-smi: No such file")
        return self.gpu_csv(self.since_start())


class Source:
    """The sampler's view: the real shared snapshot over the fake job (as core.daemon.compose.UsageView)."""

    def __init__(self, job: RunningJob, folder: str) -> None:
        self.job = job
        self.shared = SharedSlurm(job, folder, max_age=30.0, clock=job.clock.time)  # type: ignore[arg-type]

    def usage_snapshot(self, job_ids: Sequence[str], max_age: float) -> UsageSnapshot:
        self.shared.queue_snapshot()
        return self.shared.usage_snapshot(job_ids, max_age)

    def gpu_text(self, job_id: str) -> str:
        return self.job.gpu_text(job_id)


def story(store, patterns, usage, *, interval: float = 60.0, **settings) -> Story:
    config = replace(CONFIG, running_interval=30.0,
                     health=replace(HealthConfig(), usage=UsageConfig(sstat_interval=interval, **settings)))
    clock = FakeClock(START)
    job = RunningJob(clock, usage)
    source = Source(job, tempfile.mkdtemp(prefix="sstat-"))
    return Story(store, JOB, job, patterns, config=config, clock=clock, sampler=sampler(source, config.health.usage))


def warnings(tale: Story) -> List[str]:
    return [m.title.split(": ", 1)[1] for m in tale.delivered("discord-error") if ": " in m.title]


def step(rss: str, cpu: str = "00:00:00", gpu: str = "") -> str:
    return STEP.format(rss=rss, cpu=cpu, gpu=gpu)


def test_memory_near_the_request_is_said_once(story_store, patterns):
    tale = story(story_store, patterns,
                 lambda t: step("2G") if t < 3600 else step("7700M") if t < 7200 else step("7900M"))
    tale.run(5000)
    assert warnings(tale) == ["approaching memory limit (94 % of 8G)"]
    warning = tale.delivered("discord-error")[0]
    assert "`--mem`" in warning.description and "jobmon submit --escalate" in warning.description
    said = [e.created_at - START for e in story_store.load(JOB).outbox if e.kind.value == "memory"]
    assert 3600 <= said[0] <= 3600 + 60 + 10  # at the first look past the threshold (every 60 s)
    assert tale.slurm.sstat_calls <= 3 * 3600 / 60 + 2  # at most one look per sstat_interval


def test_memory_is_counted_against_a_per_cpu_request(story_store, patterns):
    """ReqMem `1Gc` (Slurm < 21.08) with 4 CPUs is 4G for the job (core.slurm.efficiency.req_mem_bytes)."""
    tale = story(story_store, patterns, lambda t: step("3800M"))
    tale.slurm.request = lambda t: ("1Gc", 4)
    tale.run(5000)
    assert warnings(tale) == ["approaching memory limit (93 % of 4G)"]


def test_an_unknown_usage_warns_nothing_and_says_why(story_store, patterns):
    outage = SlurmUnavailable("sstat failed: Connection refused")
    tale = story(story_store, patterns,  # measured, then sstat fails, then no step (the step ended)
                 lambda t: step("1G") if t < 600 else outage if t < 7200 else "")
    tale.slurm.ends_at = 7300.0
    polls = 0
    while tale.clock.time() < START + 7250:
        tale.monitor.step(tale.clock.time())
        tale.clock.sleep(10.0)
        polls += 1
        live = story_store.load(JOB).live
        if live is not None and live.usage is not None and 700 < tale.clock.time() - START < 7200:
            shown = usage_json(live)  # the last reading stays, with its time and why it is not newer
            assert shown["error"] == "sstat failed: Connection refused" and shown["updated_at"] <= START + 600
    assert "no running step of this job any more" in story_store.load(JOB).live.usage.error
    tale.run(5000)
    assert warnings(tale) == []


def test_a_placeholder_request_is_asked_again_later(story_store, patterns):
    tale = story(story_store, patterns, lambda t: step("7900M"))
    tale.slurm.request = lambda t: None if t < 60 else ("8G", 1)  # sacct's stub in the first seconds
    tale.run(5000)
    assert warnings(tale) == ["approaching memory limit (96 % of 8G)"]
    assert tale.slurm.request_calls == 2  # the stub, then the request: never again once known


def test_low_cpu_use_is_said_once_after_half_an_hour(story_store, patterns):
    tale = story(story_store, patterns, lambda t: step("1G", clock_text(t * 0.05 * 4)), cpu_low_warn=0.25)
    tale.slurm.request = lambda t: ("8G", 4)
    tale.run(5000)
    assert warnings(tale) == ["using 5 % of its 4 CPUs"]
    said = [e.created_at - START for e in story_store.load(JOB).outbox if e.kind.value == "cpu_low"]
    assert CPU_LOW_AFTER <= said[0] <= CPU_LOW_AFTER + 70


def test_an_idle_gpu_is_said_once_and_none_where_gpus_are_not_accounted(story_store, patterns):
    busy_then_idle = lambda t: step("1G", gpu=",gres/gpuutil=0" if t > 1800 else ",gres/gpuutil=87")  # noqa: E731
    tale = story(story_store, patterns, busy_then_idle, gpu_query=GpuQuery.SSTAT)
    tale.run(5000)
    assert warnings(tale) == ["GPU idle for 30m"]
    said = [e.created_at - START for e in story_store.load(JOB).outbox if e.kind.value == "gpu_idle"]
    assert 3600 <= said[0] <= 3600 + 130


@pytest.mark.parametrize("query", [GpuQuery.SSTAT, GpuQuery.SRUN, GpuQuery.OFF])
def test_no_gpu_accounting_is_silent(story_store, patterns, query):
    """Slurm 22.05 prints no gres/gpuutil; srun nvidia-smi fails here: no error, no message, GPU unknown."""
    tale = story(story_store, patterns, lambda t: step("1G"), gpu_query=query)
    tale.run(5000)
    live = story_store.load(JOB).live
    assert warnings(tale) == [] and live.usage.gpu_util_percent is None and live.usage.error == ""
    assert tale.slurm.srun_calls == (1 if query is GpuQuery.SRUN else 0)  # a step that gave nothing: not again


def test_an_idle_gpu_by_srun_nvidia_smi(story_store, patterns):
    tale = story(story_store, patterns, lambda t: step("1G"), gpu_query=GpuQuery.SRUN)
    tale.slurm.gpu_csv = lambda t: "0, 1200, 40960\n" if t > 600 else "93, 30000, 40960\n"
    tale.run(5000)
    assert warnings(tale) == ["GPU idle for 30m"]
    assert "GPU memory in use: 1.2G" in tale.delivered("discord-error")[0].description
    assert tale.slurm.srun_calls >= 3 * 3600 / 60 - 2

def test_disk_low_then_critical_two_warnings(story_store, patterns, monkeypatch):
    import core.monitor.usage as usage_module

    free = {"bytes": 50 * G}
    monkeypatch.setattr(usage_module, "free_space", lambda folders: [DiskSpace("/w", free["bytes"], 100 * G)])
    tale = story(story_store, patterns, lambda t: step("1G"))
    for at, left in ((1800, 9 * G), (3600, 8 * G), (5400, 500 * M)):
        while tale.clock.time() < START + at:
            tale.monitor.step(tale.clock.time())
            tale.clock.sleep(10.0)
        free["bytes"] = left
    tale.run(5000)
    assert warnings(tale) == ["low disk space on /w (9G free, 9.0 %)", "disk almost full on /w (500M free, 0.5 %)"]
    assert "DISK!" in health_flags(story_store.load(JOB).live)


def test_checkpoints_that_stop_are_said_once(story_store, patterns, tmp_path, monkeypatch):
    written: List[float] = []
    import core.monitor.usage as usage_module

    def files(workdir, globs, before):
        assert globs == ["ckpt/*.pt"]
        return WatchedFiles(count=len(written), newest_path="ckpt/e.pt" if written else "",
                            newest_at=written[-1] if written else 0.0)

    monkeypatch.setattr(usage_module, "look_at_files", files)
    tale = story(story_store, patterns, lambda t: step("1G"), checkpoint_stale_after=1800.0,
                 watch_files=("ckpt/*.pt",))
    while tale.clock.time() < START + 3600:  # a checkpoint every 10 minutes for an hour
        if tale.clock.time() >= START + 600 * (len(written) + 1):
            written.append(tale.clock.time())
        tale.monitor.step(tale.clock.time())
        tale.clock.sleep(10.0)
    tale.run(5000)
    assert warnings(tale) == ["no new checkpoint for 30m"]
    said = [e.created_at for e in story_store.load(JOB).outbox if e.kind.value == "checkpoint_stale"]
    assert written[-1] + 1800 <= said[0] <= written[-1] + 1800 + 70


def test_status_json_usage_is_null_where_unknown():
    assert usage_json(None) is None and usage_json(LiveState()) is None
    known = usage_json(LiveState(usage=Usage(updated_at=5.0, max_rss_bytes=3 * G, req_mem_bytes=4 * G)))
    assert known == {"max_rss_bytes": 3 * G, "req_mem_bytes": 4 * G, "memory_fraction": 0.75,
                     "cpu_fraction": None, "gpu_util_percent": None, "gpu_mem_bytes": None, "updated_at": 5.0,
                     "error": None}


def test_flags(tmp_path):
    live = LiveState(notes=["memory", "gpu_idle", "disk:low", "checkpoint_stale"])
    assert health_flags(live) == ["MEM!", "GPU-idle", "DISK!", "CKPT-stale"]


def test_submit_takes_watch_files_before_the_sbatch_flags():
    from core.chain.submitter import split_jobmon_flags

    flags, rest = split_jobmon_flags(["--watch-files", "ckpt/*.pt", "--watch-files=out/*.h5", "--mem=4G", "t.sh"])
    assert flags.watch_files == ("ckpt/*.pt", "out/*.h5") and rest == ["--mem=4G", "t.sh"]
    with pytest.raises(JobmonError, match="--watch-files needs a file pattern"):
        split_jobmon_flags(["--watch-files=", "t.sh"])



def test_the_detail_view_says_what_the_job_uses():
    from core.views.detail import resource_lines

    usage = usage_json(LiveState(usage=Usage(updated_at=5.0, max_rss_bytes=343 * M, req_mem_bytes=400 * M,
                                             cpu_fraction=0.12, gpu_util_percent=0.0, gpu_mem_bytes=G)))
    files = files_json(LiveState(files=WatchedFiles(5, 5000, 1000, "/w/ckpt/e5.pt", 100.0)), now=220.0)
    assert resource_lines(usage, files) == ["usage: memory 343M of 400M (86 %), CPU 12 %, GPU 0 % (1G)",
                                            "files: 5 (4.9K, +1K), newest e5.pt 2m ago"]
    unknown = usage_json(LiveState(usage=Usage(error="sstat failed: Connection refused")))
    assert resource_lines(unknown, None) == ["usage: unknown now: sstat failed: Connection refused"]


def test_without_sacct_the_request_is_unknown_and_status_says_so(story_store, patterns):
    tale = story(story_store, patterns, lambda t: step("7900M"))
    down = SlurmUnavailable("sacct failed: Connection refused")
    tale.slurm.request = lambda t: down if t < 7200 else ("8G", 1)
    while tale.clock.time() < START + 3600:
        tale.monitor.step(tale.clock.time())
        tale.clock.sleep(30.0)
    live = story_store.load(JOB).live
    assert usage_json(live)["error"] == "memory request unknown: sacct failed: Connection refused"
    assert usage_json(live)["memory_fraction"] is None and warnings(tale) == []
    tale.run(5000)
    assert warnings(tale) == ["approaching memory limit (96 % of 8G)"]  # once sacct answers again


def test_gpu_query_off_reads_no_gpu_even_where_accounted(story_store, patterns):
    tale = story(story_store, patterns, lambda t: step("1G", gpu=",gres/gpuutil=0"), gpu_query=GpuQuery.OFF)
    tale.run(5000)
    assert warnings(tale) == [] and story_store.load(JOB).live.usage.gpu_util_percent is None
    assert UsageConfig().gpu_query is GpuQuery.SSTAT  # the default costs nothing more than the sstat call


def test_before_the_first_reading_no_step_is_no_problem(story_store, patterns):
    """sstat lists a job's .batch step a moment after squeue says RUNNING: until then nothing is known,
    which is not a failure to report."""
    tale = story(story_store, patterns, lambda t: "" if t < 120 else step("1G"))
    tale.monitor.step(tale.clock.time())
    live = story_store.load(JOB).live
    assert live.usage.problem == "" and usage_json(live)["updated_at"] is None
    tale.run(5000)
    assert story_store.load(JOB).live.usage.max_rss_bytes == G
