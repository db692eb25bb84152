"""`jobmon serve`: a read-only HTTP server over the state folder (http.server, one thread per request).

Every answer is built from what `jobmon status` reads: the current records and the shared squeue snapshot
(refreshed only while jobs run, and then at most once per poll interval for every reader together), so a
dashboard left open costs what the live jobs cost. Rows are cached for CACHE_SECONDS across requests.

Access: on a loopback address anyone on this host may read (a Host header naming another site is refused,
so a web page cannot read it through DNS rebinding); on any other address every request must carry the
token from JOBMON_SERVE_TOKEN: `Authorization: Bearer TOKEN`, or `?token=TOKEN` once, which sets a cookie
for the dashboard's own requests.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from core.errors import JobmonError
from core.logs import log
from core.monitor.poller import SlurmView
from core.serve import dashboard
from core.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from core.serve.metrics import render_metrics
from core.serve.record import HEARTBEAT_EVERY, ServerRecord, save_server
from core.serve.views import detail_json, health_json, jobs_json, scheduler_json, stats_json
from core.slurm.jobscript import validate_job_id
from core.slurm.shared import load_scheduler_calls
from core.state.store import StateStore
from core.views.detail import detail_of
from core.views.status import StatusRow, collect_status

TOKEN_ENV = "JOBMON_SERVE_TOKEN"
COOKIE = "jobmon_token"
#: Requests within this many seconds share one reading of the state folder.
CACHE_SECONDS = 2.0
#: Log lines of a job's detail (`/jobs/<id>`).
DETAIL_LOG_LINES = 20


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def check_access(bind: str, token: str) -> None:
    """Refuse a non-loopback address without a token (JobmonError naming the variable)."""
    if not is_loopback(bind) and not token:
        raise JobmonError(f"serving on {bind} (not a loopback address) needs a token: set {TOKEN_ENV} in the "
                          "environment (clients send `Authorization: Bearer TOKEN`)")
    if token and len(token) < 16:
        raise JobmonError(f"{TOKEN_ENV} is too short: use at least 16 characters (e.g. `openssl rand -hex 16`)")


class Source:
    """The rows and details the endpoints show, read at most every CACHE_SECONDS."""

    def __init__(self, store: StateStore, slurm: SlurmView, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.slurm = slurm
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: Optional[Tuple[float, List[StatusRow], str]] = None

    def rows(self) -> Tuple[List[StatusRow], str]:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
                rows, warning = collect_status(self.store, self.slurm, include_old=False)
                self._cached = (now, rows, warning)
            return self._cached[1], self._cached[2]

    def detail(self, job_id: str) -> Dict[str, Any]:
        detail, warning = detail_of(self.store, self.slurm, job_id, log_lines=DETAIL_LOG_LINES)
        body = detail_json(detail)
        if warning:
            body["warning"] = warning
        return body


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: Tuple[Tuple[str, str], ...] = ()


def json_answer(status: int, data: Any) -> Answer:
    return Answer(status, "application/json", (json.dumps(data, indent=1) + "\n").encode())


class App:
    """Routes a path to an Answer; knows nothing of sockets (tested without one)."""

    def __init__(self, source: Source, folder: str, server_info: Optional[Dict[str, Any]] = None) -> None:
        self.source = source
        self.folder = folder
        self.server_info = server_info or {}

    def answer(self, path: str) -> Answer:
        route = urlsplit(path).path
        now = time.time()
        asset = dashboard.load_asset(route)
        if asset is not None:
            return Answer(200, asset[1], asset[0])
        if route == "/healthz":
            rows, warning = self.source.rows()
            status, body = health_json(rows, load_scheduler_calls(self.folder), warning, now)
            return json_answer(status, body)
        if route == "/stats":
            rows, warning = self.source.rows()
            return json_answer(200, stats_json(rows, load_scheduler_calls(self.folder), warning, now,
                                               self.server_info))
        if route == "/jobs":
            rows, warning = self.source.rows()
            return json_answer(200, jobs_json(rows, warning))
        if route.startswith("/jobs/"):
            try:
                job_id = validate_job_id(route[len("/jobs/"):])
                return json_answer(200, self.source.detail(job_id))
            except JobmonError as exc:
                return json_answer(404, {"error": str(exc)})
        if route == "/metrics":
            rows, warning = self.source.rows()
            calls = load_scheduler_calls(self.folder)
            reachable = scheduler_json(calls, warning, now)["reachable"]
            return Answer(200, METRICS_TYPE, render_metrics(rows, calls, reachable, now).encode())
        return json_answer(404, {"error": f"no such page: {route}",
                                 "pages": ["/", "/healthz", "/stats", "/jobs", "/jobs/<id>", "/metrics"]})


def _token_of(handler: BaseHTTPRequestHandler) -> Tuple[str, bool]:
    """The token a request carries, and whether it came in the query (then a cookie is set)."""
    header = handler.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    query = parse_qs(urlsplit(handler.path).query).get("token", [])
    if query:
        return query[0], True
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(handler.headers.get("Cookie", ""))
    except CookieError:  # a malformed Cookie header is no token
        return "", False
    return (cookie[COOKIE].value if COOKIE in cookie else ""), False


def _allowed_host(host_header: str, port: int) -> bool:
    """A loopback server answers only requests addressed to a loopback name (no DNS rebinding)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    host = host_header.strip().lower()
    return host in names or any(host == f"{name}:{port}" for name in names)


class Handler(BaseHTTPRequestHandler):
    server: JobmonHTTPServer
    server_version = "jobmon"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        if server.token:
            given, from_query = _token_of(self)
            if not hmac.compare_digest(given.encode(), server.token.encode()):
                self._send(Answer(401, "application/json", b'{"error": "a bearer token is required"}\n',
                                  (("WWW-Authenticate", 'Bearer realm="jobmon"'),)))
                return
        else:
            from_query = False
            if not _allowed_host(self.headers.get("Host", ""), server.server_address[1]):
                self._send(json_answer(403, {"error": "this server answers only to a loopback Host"}))
                return
        try:
            answer = server.app.answer(self.path)
        except Exception as exc:  # a bug or an unreadable folder: one 500, the server goes on
            log.exception("%s failed", urlsplit(self.path).path)
            answer = json_answer(500, {"error": f"{type(exc).__name__}: {exc}"})
        if from_query:
            answer.headers += (("Set-Cookie", f"{COOKIE}={server.token}; HttpOnly; SameSite=Strict; Path=/"),)
        self._send(answer)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                         "img-src 'self' data:; frame-ancestors 'none'")
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        # the path without its query: a token given as ?token= never reaches the log
        log.info("%s %s %s", self.address_string(), self.command, urlsplit(self.path).path)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.info("%s %s %s -> %s", self.address_string(), self.command, urlsplit(self.path).path, code)


class JobmonHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], app: App, token: str, state_folder: str = "",
                 record: Optional[ServerRecord] = None) -> None:
        self.app = app
        self.token = token
        self.state_folder = state_folder
        self.record = record
        self._beat_at = 0.0
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def service_actions(self) -> None:
        """Between requests (every half second): refresh the heartbeat in state/serve.json."""
        now = time.time()
        if self.record is not None and self.state_folder and now - self._beat_at >= HEARTBEAT_EVERY:
            self.record.heartbeat = now
            self._beat_at = now
            try:
                save_server(self.state_folder, self.record)
            except OSError as exc:
                log.warning("could not write the heartbeat: %s", exc)
