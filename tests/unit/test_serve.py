"""`jobmon serve` (core/serve/): each endpoint on a state folder built with the store and tests/support.py's
records, the Prometheus text parsed back, the counters the shared snapshots keep, and the access rules on a
real socket."""
from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Tuple

import pytest

from core.daemon.liveness import Health, process_start_ticks, this_host
from core.errors import JobmonError, SlurmUnavailable
from core.notify.events import EventKind, Route
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery
from core.progress.reading import Sample
from core.serve import dashboard
from core.serve.metrics import escape_label, render_metrics
from core.serve.record import ServerRecord, load_server, save_server, server_health
from core.serve.server import App, JobmonHTTPServer, Source, check_access
from core.slurm.client import Slurm
from core.slurm.model import CommandResult, JobState, QueueEntry
from core.slurm.shared import SchedulerCalls, SharedSlurm, load_scheduler_calls
from core.state.model import FinalRecord, JobRecord, MonitorInfo, Observation
from core.state.store import StateStore
from core.views.status import collect_status
from tests.support import FakeClock, full_record, header_line

NOW = time.time()


class CountingSlurm:
    """The shared view's query_queue, counted."""

    def __init__(self, entries: Dict[str, QueueEntry], error: Exception = None) -> None:
        self.entries, self.error, self.calls = entries, error, 0

    def query_queue(self, job_ids, *, not_before=0.0):
        self.calls += 1
        if self.error:
            raise self.error
        return {key: value for key, value in self.entries.items() if key in job_ids}


def alive_monitor() -> MonitorInfo:
    pid = os.getpid()
    return MonitorInfo(pid=pid, start_ticks=process_start_ticks(pid) or 0, host=this_host(), heartbeat=time.time(),
                       heartbeat_deadline=time.time() + 300)


def delivered(job_id: str, sink: str = "discord-success") -> OutboxEntry:
    return OutboxEntry(f"{job_id}:final:1", EventKind.FINAL, Route.SUCCESS, created_at=NOW, routed_at=NOW,
                       deliveries={sink: SinkDelivery(status=DeliveryStatus.DELIVERED, delivered_at=NOW)})


def running_record(job_id: str, name: str = "train") -> JobRecord:
    record = full_record(job_id)
    record.name, record.final, record.chain, record.tasks, record.array_spec = name, None, None, [], ""
    record.monitor, record.outbox, record.observation = alive_monitor(), [], Observation()
    assert record.live is not None
    record.live.target = job_id
    record.live.samples = [Sample(NOW - 60, 0.1), Sample(NOW - 30, 0.3), Sample(NOW - 5, 0.45)]
    return record


def finished_record(job_id: str) -> JobRecord:
    return JobRecord(job_id, name="done-job", created_at=NOW - 60, monitor=alive_monitor(),
                     final=FinalRecord(state=JobState.COMPLETED, elapsed="00:01:00", decided_at=NOW),
                     outbox=[delivered(job_id)])


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    store = StateStore(str(path))
    store.ensure_layout()
    return str(path)


def app_over(folder: str, records: List[JobRecord], slurm: CountingSlurm) -> App:
    store = StateStore(folder)
    for record in records:
        store.create(record)
    return App(Source(store, slurm), folder)


def get_json(app: App, path: str) -> Tuple[int, dict]:
    answer = app.answer(path)
    assert answer.content_type == "application/json"
    return answer.status, json.loads(answer.body)


QUEUE = {"11": QueueEntry("11", JobState.RUNNING, "None", "0:42"), "12": QueueEntry("12", JobState.PENDING, "Priority")}


def test_jobs_are_the_rows_status_json_prints_with_their_count(folder):
    slurm = CountingSlurm(QUEUE)
    app = app_over(folder, [running_record("11"), running_record("12", "<b>x</b>"), finished_record("10")], slurm)
    status, body = get_json(app, "/jobs")
    expected, _ = collect_status(StateStore(folder), CountingSlurm(QUEUE), include_old=False)
    assert status == 200 and body["count"] == 3
    assert [row["job_id"] for row in body["jobs"]] == ["10", "11", "12"]
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("last_poll", "progress")} for row in rows]  # noqa: E731
    assert strip(body["jobs"]) == strip([row.as_dict() for row in expected])
    by_id = {row["job_id"]: row for row in body["jobs"]}
    assert by_id["11"]["state"] == "RUNNING" and by_id["12"]["state"] == "PENDING"
    assert 0.4 < by_id["11"]["progress"]["fraction"] < 0.5  # 45% of epoch 2 of 3, as `status` shows it
    assert by_id["12"]["name"] == "<b>x</b>", "JSON carries names as they are; the page escapes them"


def test_requests_within_a_few_seconds_share_one_reading_and_one_squeue(folder):
    slurm = CountingSlurm(QUEUE)
    app = app_over(folder, [running_record("11")], slurm)
    for path in ("/jobs", "/healthz", "/stats", "/metrics", "/jobs"):
        assert app.answer(path).status in (200, 503)
    assert slurm.calls == 1


def test_nothing_running_costs_no_squeue(folder):
    slurm = CountingSlurm(QUEUE)
    app = app_over(folder, [finished_record("10")], slurm)
    assert get_json(app, "/jobs")[1]["count"] == 1
    assert slurm.calls == 0


def test_healthz_is_ok_when_monitors_live_and_everything_was_delivered(folder):
    app = app_over(folder, [running_record("11"), finished_record("10")], CountingSlurm(QUEUE))
    status, body = get_json(app, "/healthz")
    assert (status, body["status"], body["reasons"]) == (200, "ok", [])
    assert body["dead_monitors"] == [] and body["undelivered"] == []


def test_healthz_is_degraded_by_a_dead_monitor_and_an_undelivered_message(folder):
    dead = running_record("11")
    dead.monitor = MonitorInfo(pid=0, host=this_host(), heartbeat=NOW - 999, heartbeat_deadline=NOW - 900)
    failed = finished_record("10")
    failed.outbox[0].deliveries["discord-success"].status = DeliveryStatus.GONE
    status, body = get_json(app_over(folder, [dead, failed], CountingSlurm(QUEUE)), "/healthz")
    assert (status, body["status"]) == (503, "degraded")
    assert body["dead_monitors"] == ["11"]
    assert body["undelivered"] == [{"job_id": "10", "event": "10:final:1", "sink": "discord-success", "status": "gone"}]


def test_healthz_is_degraded_when_squeue_fails(folder):
    app = app_over(folder, [running_record("11")], CountingSlurm({}, SlurmUnavailable("squeue failed: timeout")))
    status, body = get_json(app, "/healthz")
    assert status == 503 and body["scheduler_reachable"] is False
    assert "squeue failed: timeout" in body["reasons"][0]


def test_stats_counts_states_monitors_and_deliveries(folder):
    dead = running_record("12")
    dead.monitor = MonitorInfo(pid=0, host=this_host(), heartbeat=NOW - 999, heartbeat_deadline=NOW - 900)
    app = app_over(folder, [running_record("11"), dead, finished_record("10")], CountingSlurm(QUEUE))
    status, body = get_json(app, "/stats")
    assert status == 200 and body["jobs"] == 3
    assert body["states"] == {"COMPLETED": 1, "PENDING": 1, "RUNNING": 1}
    assert body["monitors"] == {"ALIVE": 1, "DEAD": 1, "DONE": 1}
    assert body["deliveries"] == {"discord-success": {"delivered": 1}}
    assert body["scheduler"]["calls"] == {"squeue": 0, "sacct": 0}


def test_one_job_with_its_record_events_logs_and_progress_samples(folder, tmp_path):
    record = running_record("11")
    log = tmp_path / "e.err"
    log.write_text("epoch 1\n<script>alert(1)</script>\n 45%|####\n")
    record.stderr_path, record.stdout_path = str(log), ""
    record.outbox = [delivered("11")]
    status, body = get_json(app_over(folder, [record], CountingSlurm(QUEUE)), "/jobs/11")
    assert status == 200
    assert body["job"]["job_id"] == "11" and body["job"]["state"] == "RUNNING"
    assert body["events"][0]["key"] == "11:final:1"
    assert body["record"]["findings"][0]["category"] == "cuda_oom"
    assert body["logs"][0]["lines"][-2:] == ["<script>alert(1)</script>", " 45%|####"]
    assert [fraction for _, fraction in body["progress"]] == [0.1, 0.3, 0.45]
    assert body["memory"] == []


@pytest.mark.parametrize("path", ["/jobs/999", "/jobs/..%2Fconfig", "/jobs/1;ls", "/nothing"])
def test_unknown_jobs_and_pages_are_404(folder, path):
    status, body = get_json(app_over(folder, [finished_record("10")], CountingSlurm({})), path)
    assert status == 404 and body["error"]


def parse_prometheus(text: str) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    """A small parser of the text format: every sample line by metric name; HELP/TYPE checked."""
    families: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    types: Dict[str, str] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.eE+]+|NaN|[+-]Inf)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "untyped")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = sample.match(line)
        assert match, f"not a sample line: {line!r}"
        name, inner, value = match.groups()
        assert name in types, f"{name} has no TYPE line before it"
        labels = {}
        if inner:
            consumed = 0
            for found in label.finditer(inner):
                assert found.start() == consumed, f"bad labels in {line!r}"
                labels[found.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)),
                                                found.group(2))
                consumed = found.end()
            assert consumed == len(inner), f"bad labels in {line!r}"
        families.setdefault(name, []).append((labels, float(value)))
    return families


def test_metrics_parse_as_prometheus_text_and_match_the_counts(folder):
    failed = finished_record("10")
    failed.outbox[0].deliveries["discord-success"].status = DeliveryStatus.FAILED
    app = app_over(folder, [running_record("11"), running_record("12"), failed], CountingSlurm(QUEUE))
    answer = app.answer("/metrics")
    assert answer.status == 200 and answer.content_type.startswith("text/plain; version=0.0.4")
    metrics = parse_prometheus(answer.body.decode())
    jobs = {labels["state"]: value for labels, value in metrics["jobmon_jobs"]}
    assert jobs == {"COMPLETED": 1, "PENDING": 1, "RUNNING": 1}
    monitors = {labels["health"]: value for labels, value in metrics["jobmon_monitors"]}
    # a message not delivered keeps its monitor alive (not DONE)
    assert monitors["ALIVE"] == 3 and monitors["DONE"] == 0 and set(monitors) == {h.value for h in Health}
    assert metrics["jobmon_events"] == [({"sink": "discord-success", "status": "failed"}, 1.0)]
    assert {labels["command"] for labels, _ in metrics["jobmon_scheduler_calls_total"]} == {"squeue", "sacct"}


def test_label_values_are_escaped_and_parse_back():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = render_metrics([], SchedulerCalls(squeue_calls=3, squeue_failures=1, squeue_taken_at=NOW), True, NOW)
    metrics = parse_prometheus(text)
    assert ({"command": "squeue"}, 3.0) in metrics["jobmon_scheduler_calls_total"]
    assert metrics["jobmon_scheduler_up"] == [({}, 1.0)]


SQUEUE_HEADER = header_line("squeue_itrM.txt")


def test_the_shared_snapshots_count_their_squeue_and_sacct_calls_and_failures(tmp_path):
    answers = [CommandResult(0, SQUEUE_HEADER + "12|RUNNING|None\n", ""),
               CommandResult(1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")]

    def runner(argv, timeout):
        if argv[0] == "squeue":
            return answers.pop(0) if len(answers) > 1 else answers[0]
        return CommandResult(1, "", "sacct: error: Problem talking to the database: Connection refused")

    clock = FakeClock()
    view = SharedSlurm(Slurm(runner), str(tmp_path), max_age=30.0, clock=clock.time)
    assert load_scheduler_calls(str(tmp_path)) == SchedulerCalls()
    view.query_queue(["12"])
    view.query_queue(["12"])  # fresh: no call
    clock.now += 31
    with pytest.raises(SlurmUnavailable):
        view.query_queue(["12"])
    with pytest.raises(SlurmUnavailable):
        view.query_accounting(["12"])
    calls = load_scheduler_calls(str(tmp_path))
    assert (calls.squeue_calls, calls.squeue_failures, calls.sacct_calls, calls.sacct_failures) == (2, 1, 1, 1)
    assert "Unable to contact" in calls.squeue_error and calls.squeue_taken_at == clock.now


def test_the_dashboard_never_parses_data_as_html():
    script, _ = dashboard.load_asset("/dashboard.js")
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script
    page, content_type = dashboard.load_asset("/")
    assert content_type.startswith("text/html") and b'src="/dashboard.js"' in page
    assert b"http://" not in page.replace(b"http://www.w3.org", b"") and b"https://" not in page


def test_a_non_loopback_address_needs_a_long_enough_token():
    check_access("127.0.0.1", "")
    check_access("::1", "")
    with pytest.raises(JobmonError, match="JOBMON_SERVE_TOKEN"):
        check_access("0.0.0.0", "")
    with pytest.raises(JobmonError, match="too short"):
        check_access("0.0.0.0", "short")
    check_access("0.0.0.0", "x" * 32)


@pytest.fixture
def live_server(folder):
    servers = []

    def start(token: str = "") -> str:
        app = app_over(folder, [finished_record("10")], CountingSlurm({}))
        server = JobmonHTTPServer(("127.0.0.1", 0), app, token)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch(url: str, headers: Dict[str, str] = None) -> Tuple[int, Dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_with_a_token_every_request_must_carry_it(live_server):
    token = "t0ken-" + "x" * 20
    base = live_server(token)
    for path in ("/", "/jobs", "/healthz", "/metrics", "/dashboard.js"):
        assert fetch(base + path)[0] == 401
        assert fetch(base + path, {"Authorization": "Bearer wrong-" + "x" * 20})[0] == 401
    status, _, body = fetch(base + "/jobs", {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["count"] == 1
    status, headers, _ = fetch(f"{base}/?token={token}")
    assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
    assert fetch(base + "/jobs", {"Cookie": f"jobmon_token={token}"})[0] == 200


def test_a_loopback_server_answers_only_loopback_host_names(live_server):
    base = live_server()
    assert fetch(base + "/jobs")[0] == 200
    assert fetch(base + "/jobs", {"Host": "localhost"})[0] == 200
    assert fetch(base + "/jobs", {"Host": "evil.example:80"})[0] == 403
    status, headers, _ = fetch(base + "/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]


def test_the_server_record_tells_alive_dead_and_stopped(tmp_path):
    me = ServerRecord(pid=os.getpid(), start_ticks=process_start_ticks(os.getpid()) or 0, host=this_host(),
                      bind="127.0.0.1", port=8642, started_at=NOW, heartbeat=NOW)
    save_server(str(tmp_path), me)
    loaded = load_server(str(tmp_path))
    assert loaded == me and loaded.url == "http://127.0.0.1:8642/"
    assert server_health(loaded, this_host(), NOW) is Health.ALIVE
    assert server_health(ServerRecord(pid=0, host=this_host()), this_host(), NOW) is Health.DEAD
    assert server_health(ServerRecord(pid=1, host="other", heartbeat=NOW - 600), this_host(), NOW) is Health.DEAD
    assert server_health(ServerRecord(pid=1, host="other", heartbeat=NOW - 5), this_host(), NOW) is Health.ALIVE
    loaded.stopped_at = NOW
    assert server_health(loaded, this_host(), NOW) is Health.DONE
    assert ServerRecord(bind="::1", port=1).url == "http://[::1]:1/"
