"""The one home of the unit tests' fixture loaders, Slurm fakes, fake clock and fake sinks.

Recorded Slurm output lives in tests/fixtures/slurm (captured with `-n`/`-h`, see its README) and
the header lines those commands print without `-n`/`-h` in tests/fixtures/slurm_headers (captured
for real on the same cluster); `slurm_output` joins the two, which is what jobmon's adapter reads.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from core.analysis.finding import Finding
from core.config import Config
from core.monitor.dispatcher import Dispatcher
from core.monitor.monitor import Identity, Monitor
from core.monitor.poller import Check, Poller, Sampler
from core.monitor.records import Records
from core.notify.events import Event, EventKind, Route, RouteFacts
from core.notify.message import Envelope, Facts, Field, Message, Tone
from core.notify.outbox import Answer, DeliveryStatus, OutboxEntry, Outcome, SinkDelivery, add_events
from core.notify.sink import Sink
from core.progress.follow import FollowedLog
from core.progress.reading import Reading, Sample, Source
from core.slurm.efficiency import Efficiency, EfficiencySpread, Spread
from core.slurm.model import AccountingRecord, JobState, QueueEntry
from core.slurm.parse import SACCT_DELIMITER, SACCT_FIELDS, parse_sacct, parse_squeue
from core.state.model import (
    Action,
    Attempt,
    Chain,
    DiskSpace,
    FinalRecord,
    FinalSource,
    JobRecord,
    Level,
    LiveState,
    LogOptions,
    MonitorInfo,
    Observation,
    PendingRound,
    PendingSubmission,
    RecordSource,
    Round,
    TaskOutcome,
    TaskTrack,
    Usage,
    WatchedFiles,
)
from core.state.store import StateStore

TESTS = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(TESTS, "fixtures")
SLURM_FIXTURES = os.path.join(FIXTURES, "slurm")
HEADERS = os.path.join(FIXTURES, "slurm_headers")
STATE_V1 = os.path.join(FIXTURES, "state_v1")

#: Captures made with the AllocCPUS column (16 fields); the other sacct captures have 15 (README).
SACCT_WITH_ALLOCCPUS = frozenset({
    "sacct_completed_alloccpus.txt", "sacct_het_cancelled.txt", "sacct_het_deadline.txt",
    "sacct_het_deadline_cancelled.txt", "sacct_het_pending.txt",
})
#: Captures made with `-o '%i|%T|%r|%M'`; the other squeue captures used `-o '%i|%T|%r'` (README).
SQUEUE_WITH_TIME = frozenset({
    "squeue_het_cancelled_r.txt", "squeue_het_deadline_cancelled_r.txt", "squeue_het_deadline_r.txt",
    "squeue_het_dependency_never_r.txt", "squeue_het_pending_r.txt",
})


def read_text(*parts: str) -> str:
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return handle.read()


def header_line(name: str) -> str:
    """The first line of a real header capture in tests/fixtures/slurm_headers."""
    return read_text(HEADERS, name).splitlines(keepends=True)[0]


def slurm_output(name: str) -> str:
    """A recorded stdout as jobmon's adapter reads it: the capture with the header its command prints."""
    body = read_text(SLURM_FIXTURES, name)
    if name.startswith("sacct_") and name.endswith(".txt"):
        header = "sacct_16_fields.txt" if name in SACCT_WITH_ALLOCCPUS else "sacct_15_fields.txt"
    elif name.startswith("squeue_") and name.endswith(".txt"):
        header = "squeue_itrM.txt" if name in SQUEUE_WITH_TIME else "squeue_itr.txt"
    else:
        return body
    return header_line(header) + body


def submit_lines_output() -> str:
    """The real `sacct -X -P --format=JobID,SubmitLine` capture (slurm_headers/sacct_submitline.txt) as
    find_by_comment reads it, with `--delimiter=^|^`: the capture used sacct's default `|`, and a JobID
    never contains one, so only each line's first `|` is the delimiter."""
    lines = read_text(HEADERS, "sacct_submitline.txt").splitlines(keepends=True)
    return "".join(line.replace("|", SACCT_DELIMITER, 1) for line in lines)


def queue(name: str) -> Dict[str, QueueEntry]:
    """A recorded squeue answer, keyed like SharedSlurm.query_queue's."""
    return {entry.job_id: entry for entry in parse_squeue(slurm_output(name))}


def queue_text(text: str) -> Dict[str, QueueEntry]:
    """squeue rows written by a test (`4|RUNNING|None|0:05`), parsed under the real header."""
    return {entry.job_id: entry for entry in parse_squeue(header_line("squeue_itrM.txt") + text)}


def accounting(name: str) -> Dict[str, AccountingRecord]:
    """A recorded sacct answer, keyed like SharedSlurm.query_accounting's."""
    return {record.job_id: record for record in parse_sacct(slurm_output(name))}


def sacct_header() -> str:
    return SACCT_DELIMITER.join(SACCT_FIELDS) + "\n"


def sacct_row(job_id: str, state: str, exit_code: str = "0:0", *, name: str = "train", req_mem: str = "1G",
              user: str = "alice", elapsed: str = "00:01:00", max_rss: str = "58180K", time_limit: str = "01:00:00",
              cpus: str = "1", total_cpu: str = "") -> str:
    """A job row and its .batch step, in the column order of SACCT_FIELDS (for stories no capture covers)."""
    fields = [job_id, job_id, name, state, exit_code, elapsed, time_limit, "", req_mem, "vm", "debug", "/w",
              "2026-11-21T20:00:00", "2026-11-21T20:01:00", user, cpus, total_cpu, "", "1", f"cpu={cpus},node=1", ""]
    step = [f"{job_id}.batch", f"{job_id}.batch", "batch", state.split()[0], exit_code, elapsed, "", max_rss, "",
            "vm", "", "", "", "", "", cpus, total_cpu, "1", "1", f"cpu={cpus},node=1", ""]
    return SACCT_DELIMITER.join(fields) + "\n" + SACCT_DELIMITER.join(step) + "\n"


def accounting_text(rows: str) -> Dict[str, AccountingRecord]:
    """sacct rows made by `sacct_row`, parsed under their header."""
    return {record.job_id: record for record in parse_sacct(sacct_header() + rows)}


Answer_ = Union[Dict[str, QueueEntry], Dict[str, AccountingRecord], Exception]


class FakeClock:
    """Time that moves only when slept through."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: List[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedSlurm:
    """A monitor's view of Slurm answering from scripted lists; the last answer repeats."""

    def __init__(self, queue_answers: Sequence[Answer_], accounting_answers: Sequence[Answer_],
                 job_ids: Optional[Sequence[str]] = None) -> None:
        self.queue_answers = list(queue_answers)
        self.accounting_answers = list(accounting_answers)
        self.job_ids = list(job_ids) if job_ids is not None else None
        self.queue_calls = 0
        self.accounting_calls = 0

    @staticmethod
    def _next(answers: List[Answer_]) -> Any:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def query_queue(self, job_ids: Sequence[str], *, not_before: float = 0.0) -> Dict[str, QueueEntry]:
        if self.job_ids is not None:
            assert list(job_ids) == self.job_ids
        self.queue_calls += 1
        result: Dict[str, QueueEntry] = self._next(self.queue_answers)
        return result

    def next_poll_delay(self, interval: float, job_id: str) -> float:
        return interval

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        if self.job_ids is not None:
            assert list(job_ids) == self.job_ids
        self.accounting_calls += 1
        result: Dict[str, AccountingRecord] = self._next(self.accounting_answers)
        return result


class FakeSink(Sink):
    """A sink that records what it was given and answers from a script (the last answer repeats).

    With a `clock`, it also records when each attempt started (`times`) and lets `duration` seconds
    pass on that clock during each attempt (a slow request). `on_attempt(payload)` runs first in each
    attempt: to look at the outbox mid-send, or to raise like a sink with a bug."""

    def __init__(self, name: str, answers: Sequence[Union[str, Outcome]] = ("delivered",), *,
                 clock: Optional[FakeClock] = None, duration: float = 0.0,
                 on_attempt: Optional[Callable[[Any], None]] = None) -> None:
        super().__init__(name)
        self.answers = list(answers)
        self.delivered: List[Message] = []
        self.attempts: List[Message] = []
        self.times: List[float] = []
        self.clock = clock
        self.duration = duration
        self.on_attempt = on_attempt
        self.min_spacing = 0.0

    @property
    def destination(self) -> str:
        return f"fake://{self.name}"

    def describe(self) -> str:
        return f"fake {self.name}"

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Message:
        return message

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        if self.on_attempt is not None:
            self.on_attempt(payload)
        if self.clock is not None:
            self.times.append(self.clock.now)
            self.clock.now += self.duration
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        outcome = answer if isinstance(answer, Outcome) else Outcome(Answer(answer), f"{answer} detail",
                                                                     message_id="m1")
        self.attempts.append(payload)
        if outcome.answer is Answer.DELIVERED:
            self.delivered.append(payload)
        return outcome


class MemoryOutbox:
    """An outbox held in memory, read and written like one in a state file (an OutboxAccess):
    every load returns a copy, so a change that is not made through `update_outbox` is lost."""

    def __init__(self, entries: Sequence[OutboxEntry] = ()) -> None:
        self._entries: List[OutboxEntry] = copy.deepcopy(list(entries))
        self.updates = 0

    def load_outbox(self) -> List[OutboxEntry]:
        return copy.deepcopy(self._entries)

    def update_outbox(self, change: Callable[[List[OutboxEntry]], None]) -> None:
        entries = copy.deepcopy(self._entries)
        change(entries)
        self._entries = entries
        self.updates += 1

    def add(self, job_id: str, events: Sequence[Event], now: float) -> None:
        self.update_outbox(lambda entries: add_events(entries, job_id, events, now))

    def entry(self, key: str) -> OutboxEntry:
        return next(entry for entry in self.load_outbox() if entry.key == key)


class Routes:
    """A `sinks_for` that maps each route to fixed sink names and counts its calls (by route)."""

    def __init__(self, table: Dict[Route, Sequence[str]]) -> None:
        self.table = {route: tuple(names) for route, names in table.items()}
        self.calls: List[Route] = []
        self.facts: List[RouteFacts] = []

    def __call__(self, facts: RouteFacts) -> Sequence[str]:
        self.calls.append(facts.route)
        self.facts.append(facts)
        return self.table.get(facts.route, ())


class FakeResponse:
    """What `requests.post` returns, as far as a sink reads it; `body` may be an exception `json()` raises."""

    def __init__(self, status: int, headers: Optional[Dict[str, str]] = None, body: Any = None,
                 text: str = "") -> None:
        self.status_code, self.headers, self._body = status, headers or {}, body
        self.text = text or str(body)

    def json(self) -> Any:
        if isinstance(self._body, BaseException):
            raise self._body
        return self._body


class ScriptedPost:
    """A stand-in for `requests.post`: records each call and answers (or raises) from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: List[Dict[str, Any]] = []

    def __call__(self, url: str, **kwargs: Any) -> Any:
        self.calls.append({"url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeDelivery:
    """Delivers in this process to fake sinks (what a daemon's delivery child does with real ones)."""

    def __init__(self, store: StateStore, config: Config, sinks: Dict[str, Sink], clock: FakeClock) -> None:
        self.store, self.config, self.sinks, self.clock = store, config, sinks, clock
        self.runs = 0

    def deliver(self, records: Records) -> Optional[float]:
        from core.notify.deliver import deliver_due

        self.runs += 1
        deliver_due(records, self.sinks, self.config.sinks_for, pacer_folder=self.store.folder, owner="test:1",
                    clock=self.clock.time, pacer_sleep=self.clock.sleep)
        return None


CONFIG = Config(success_webhook="http://127.0.0.1:1/api/webhooks/1/ok",
                error_webhook="http://127.0.0.1:1/api/webhooks/2/err",
                running_interval=30.0, pending_interval=60.0, accounting_wait=120.0)


class Story:
    """One job's monitor wired to fakes: scripted Slurm, fake sinks (`discord-success`, `discord-error`),
    a fake clock; `run()` steps it to the end like the daemon's loop does."""

    def __init__(self, store: StateStore, job_id: str, slurm: Any, patterns: Sequence[Any], *,
                 config: Config = CONFIG, clock: Optional[FakeClock] = None,
                 sinks: Optional[Dict[str, Sink]] = None, checks: Optional[Sequence[Check]] = None,
                 chains: Optional[Callable[[], Any]] = None, should_stop: Callable[[], bool] = lambda: False,
                 scancel: Optional[Callable[[str], None]] = None, sampler: Optional[Sampler] = None) -> None:
        from core.monitor.checks import checks_for

        self.store, self.job_id, self.slurm, self.config = store, job_id, slurm, config
        self.clock = clock or FakeClock()
        self.sinks: Dict[str, Sink] = sinks if sinks is not None else {
            "discord-success": FakeSink("discord-success"), "discord-error": FakeSink("discord-error")}
        self.delivery = FakeDelivery(store, config, self.sinks, self.clock)
        self.monitor = Monitor(
            Records(store, job_id), config=config,
            poller=Poller(slurm, config, checks_for(config, lambda: patterns) if checks is None else checks, sampler),
            dispatcher=Dispatcher(self.delivery, config.sinks_for, "testhost"), chains=chains or self._no_chains,
            patterns=lambda: patterns, identity=Identity("testhost", 4242), should_stop=should_stop,
            scancel=scancel,
        )

    @staticmethod
    def _no_chains() -> Any:
        raise AssertionError("this story has no chain")

    def run(self, max_steps: int = 1000) -> int:
        """Step until the monitor is done; returns the number of steps."""
        for steps in range(1, max_steps + 1):
            wake = self.monitor.step(self.clock.time())
            if wake is None:
                return steps
            self.clock.sleep(max(0.0, wake - self.clock.time()))
        raise AssertionError(f"the monitor did not finish within {max_steps} steps")

    def delivered(self, sink: str) -> List[Message]:
        delivered: List[Message] = self.sinks[sink].delivered
        return delivered

    def all_delivered(self) -> List[Message]:
        return [message for name in self.sinks for message in self.delivered(name)]


# -- state records -------------------------------------------------------------------------------
def v1_names() -> List[str]:
    """The real schema-1 state files in tests/fixtures/state_v1 (see its README), by file name."""
    return sorted(name for name in os.listdir(STATE_V1) if name.endswith(".json"))


def v1_data(name: str) -> Dict[str, Any]:
    """One schema-1 fixture as raw JSON."""
    data: Dict[str, Any] = json.loads(read_text(STATE_V1, name))
    return data


def copy_v1_state(folder: str, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Copy schema-1 fixtures into `folder` as `<job_id>.json`, as jobmon 1 left them; returns name -> job id."""
    os.makedirs(folder, exist_ok=True)
    jobs = {}
    for name in names if names is not None else v1_names():
        job_id = v1_data(name)["job_id"]
        shutil.copyfile(os.path.join(STATE_V1, name), os.path.join(folder, f"{job_id}.json"))
        jobs[name] = job_id
    return jobs


def full_record(job_id: str = "123") -> JobRecord:
    """A record with every field and every nested structure set to a non-default value."""
    message = Message(title=f"Job {job_id} (train): FAILED", description="exit 3", tone=Tone.FAILURE,
                      fields=(Field("Exit code", "3"), Field("Node", "vm", inline=False)), excerpt="boom\n",
                      footer="jobmon", url="https://example.invalid/x",
                      facts=Facts(job_id=job_id, name="train", state="FAILED", exit_code="3", findings=("cuda_oom",),
                                  efficiency="peak 1 GiB of 2G", progress="40%"))
    level_big = Level(mem="4G", time="02:00:00", partition="big", gres="gpu:2", cpus=8)
    return JobRecord(
        job_id=job_id, name="train", cluster="localcluster", user="alice", script="/home/alice/job.sh",
        sbatch_args=["--mem=1G", "-p", "debug"], script_args=["a b", "--lr=0.1"], submit_dir="/home/alice",
        stdout_path="/home/alice/o.out", stderr_path="/home/alice/e.err",
        log_options=LogOptions(output="o-%A_%a.out", error="e-%A_%a.err", chdir="/w"),
        array_spec="0-2", expected_tasks=[0, 1, 2], created_at=1_795_900_000.25, source=RecordSource.WATCH,
        monitor=MonitorInfo(pid=4242, start_ticks=99, host="vm", started_at=1.0, heartbeat=2.0,
                            heartbeat_deadline=3.5, stop_requested=True, stopped_at=3.75),
        observation=Observation(state=JobState.RUNNING, reason="None", seen_at=4.0, controller_down_since=5.0,
                                accounting_down_since=6.0, final_seen_at=7.0, last_error="x"),
        final=FinalRecord(state=JobState.FAILED, state_text="1 COMPLETED, 2 FAILED", exit_code=3, signal=9,
                          elapsed="00:00:04", time_limit="01:00:00", max_rss_bytes=58180 * 1024, req_mem="1G",
                          nodes="vm", partition="debug", work_dir="/home/alice", start="s", end="e",
                          reason="NonZeroExitCode", source=FinalSource.SQUEUE, incomplete=True, decided_at=8.0,
                          alloc_cpus=2, task_counts={"COMPLETED": 1, "FAILED": 2}, failed_tasks="1-2",
                          slowest_task="2", total_cpu="00:07.500", used_mem_bytes=2 * 58180 * 1024, alloc_nodes=1,
                          alloc_gpus=2, gpu_util=150.0),
        tasks=[TaskOutcome(task_id="1", job_id=f"{job_id}_1", raw_id="124", state=JobState.FAILED, exit_code=3,
                           signal=6, elapsed="00:00:01", max_rss_bytes=1024, categories=["cuda_oom"],
                           req_mem="1G", time_limit="01:00:00", alloc_cpus=2, total_cpu="00:01.250",
                           used_mem_bytes=2048, alloc_nodes=1, alloc_gpus=1, gpu_util=87.0)],
        chain=Chain(
            ladder=[Level(mem="1G"), level_big], max_retries=5, mem_option="--mem-per-cpu", current_job="130",
            level_index=1, level=level_big,
            attempts=[Attempt(job_id=job_id, level_index=0, resources=Level(mem="1G"), state=JobState.OUT_OF_MEMORY,
                              exit_code=137, elapsed="00:00:02", core_hours=0.5, categories=["slurm_oom"],
                              decision="escalate", round=1, tasks="0-2", task_counts={"OUT_OF_MEMORY": 1},
                              failed_tasks="0", efficiency=Efficiency(12.5, 99.0, 3.25, 40.0),
                              efficiency_spread=EfficiencySpread(
                                  tasks=3, cpu_percent=Spread(1.0, 2.0, 3.0, 3),
                                  memory_percent=Spread(4.0, 5.0, 6.0, 2), time_percent=Spread(7.0, 8.0, 9.0, 1),
                                  gpu_percent=Spread(0.5, 0.5, 0.5, 1))),
                      Attempt(job_id="130", level_index=1, resources=level_big, state=None, round=2, tasks="0")],
            pending=PendingRound(round=3, decided_at=9.5, submissions=[
                PendingSubmission(level_index=1, level=level_big, action=Action.ESCALATE_TIME, tasks="0",
                                  sbatch_started=9.75, job_id="131", stdout="Submitted", stderr="warn",
                                  refused="no")]),
            round=2,
            rounds=[Round(number=1, jobs=[job_id], task_counts={"OUT_OF_MEMORY": 1}, failed_tasks="0",
                          retried_tasks="0", not_retried={"FAILED: no retry": "1"}, decision="task 0 → 4G")],
            tasks={"0": TaskTrack(level_index=1, level=level_big, runs=[f"{job_id}_0 OUT_OF_MEMORY"])}),
        categories=["cuda_oom", "python_traceback"],
        findings=[Finding(category="cuda_oom", severity="critical", line_no=3, line="CUDA out of memory",
                          hint="smaller batch")],
        excerpt="line 1\nline 2",
        warnings=[Finding(category="nan_loss", severity="error", line_no=1, line="loss: nan", hint="lower the lr")],
        outbox=[OutboxEntry(key=f"{job_id}:final:1", kind=EventKind.FINAL, route=Route.ERROR, created_at=8.0,
                            message=message, routed_at=8.5, attributed_at=8.2,
                            deliveries={"discord-error": SinkDelivery(
                                status=DeliveryStatus.FAILED, attempts=4, first_attempt_at=8.5, next_attempt_at=20.0,
                                last_error="HTTP 502", delivered_at=0.5, message_id="m1", claimed_by="vm:4242")})],
        live=LiveState(
            target=f"{job_id}", run_start="2026-11-29T00:19:50", started_at=2.0,
            logs=[FollowedLog("/w/train.err", device=2049, inode=77, offset=4096, pending="\r 45%|####", grown_at=6.5)],
            reading=Reading(45.0, 100.0, "it", Source.TQDM, remaining=60.0, epoch=2, epochs=3), read_at=6.5,
            samples=[Sample(5.0, 0.4), Sample(6.5, 0.45)], advanced_at=6.5, advanced_before=5.0, paused_at=6.0,
            grown_at=6.5,
            notes=["time:80%:3600"], last_lines=["saving checkpoint"], sampled_at=6.0,
            usage=Usage(updated_at=6.0, max_rss_bytes=300 << 20, req_mem_bytes=400 << 20, alloc_cpus=2,
                        cpu_fraction=0.5, gpu_util_percent=0.0, gpu_mem_bytes=1 << 30, gpu_idle_since=5.0,
                        gpu_srun_failed=True,
                        error="sstat failed: timeout", request_error="sacct failed: Connection refused"),
            files=WatchedFiles(count=3, total_bytes=3000, growth_bytes=1000, newest_path="/w/ckpt/3.pt",
                               newest_at=5.5),
            disks=[DiskSpace("/w", free_bytes=1 << 30, total_bytes=100 << 30)],
        ),
        watch_files=["ckpt/*.pt"],
    )
