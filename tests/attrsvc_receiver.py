"""A local stand-in for the NVIDIA attribution service (nvrx-attrsvc), for tests.

* POST /logs  takes `{"log_path", "user", "job_id", "analysis_intent"}`: all four must be strings and
              the intent `terminal` (else 422 with `{"error_code", "message"}`, recorded in `rejected`);
              answers `{"mode": "SINGLE"}`.
* GET /logs?log_path=...  404 NOT_FOUND for a log never submitted; `{"status": "in_progress"}` for the
              first `polls_before_done` polls, then `{"status": "completed", "recommendation": {"action",
              "reason", "source"}, "result": {...}}`; with `never_done`, in progress for ever.

Scripted misbehaviour, one answer per request to a method, first in first out: `(status, error_code)`,
like `(503, "job_limit_reached")`, `(500, "")`, `(400, "INVALID_PATH")`, or `(429, seconds)` (with
Retry-After). Standard library only; binds 127.0.0.1 on a free port.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple, Union
from urllib.parse import parse_qs, urlsplit

Script = Tuple[int, Union[str, float]]
Reply = Tuple[int, Dict[str, Any], Dict[str, str]]


class AttrsvcReceiver:
    def __init__(self, action: str = "RESTART", reason: str = "NCCL timeout on one node: safe to restart",
                 polls_before_done: int = 0, never_done: bool = False) -> None:
        self.action, self.reason = action, reason
        self.polls_before_done, self.never_done = polls_before_done, never_done
        self.submitted: List[Dict[str, Any]] = []
        self.rejected: List[str] = []
        self.hits: Dict[str, List[str]] = {"POST": [], "GET": []}
        self.scripts: Dict[str, List[Script]] = {"POST": [], "GET": []}
        self._polls: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> AttrsvcReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def enqueue(self, method: str, *answers: Script) -> None:
        with self._lock:
            self.scripts[method].extend(answers)

    def _answer(self, method: str, path: str, query: Dict[str, List[str]], body: Any) -> Reply:
        with self._lock:
            if path != "/logs":
                return 404, {"error_code": "NOT_FOUND", "message": "no such route"}, {}
            if self.scripts[method]:
                status, extra = self.scripts[method].pop(0)
                self.hits[method].append(str(status))
                if status == 429:
                    return 429, {"error_code": "rate_limited", "message": "slow down"}, {"Retry-After": f"{extra:g}"}
                return status, {"error_code": str(extra), "message": f"scripted {status}"}, {}
            if method == "POST":
                return self._submit(body)
            return self._result(query.get("log_path", [""])[0])

    def _submit(self, body: Any) -> Reply:
        keys = ("log_path", "user", "job_id", "analysis_intent")
        if not isinstance(body, dict) or not all(isinstance(body.get(key), str) for key in keys) \
                or body["analysis_intent"] != "terminal":
            self.rejected.append(json.dumps(body))
            self.hits["POST"].append("422")
            return 422, {"error_code": "INVALID_REQUEST", "message": "log_path, user, job_id, analysis_intent"}, {}
        self.submitted.append(body)
        self.hits["POST"].append("200")
        return 200, {"mode": "SINGLE"}, {}

    def _result(self, log_path: str) -> Reply:
        if not any(item["log_path"] == log_path for item in self.submitted):
            self.hits["GET"].append("404")
            return 404, {"error_code": "NOT_FOUND", "message": "log not submitted"}, {}
        polls = self._polls[log_path] = self._polls.get(log_path, 0) + 1
        self.hits["GET"].append("200")
        if self.never_done or polls <= self.polls_before_done:
            return 200, {"status": "in_progress"}, {}
        return 200, {"status": "completed", "mode": "SINGLE",
                     "recommendation": {"action": self.action, "reason": self.reason, "source": "log_analyzer"},
                     "result": {"module": "log_analyzer", "result": []}}, {}

    def _handler(self) -> type:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, method: str, body: Any) -> None:
                parts = urlsplit(self.path)
                status, payload, headers = receiver._answer(method, parts.path, parse_qs(parts.query), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self._reply("GET", None)

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                self._reply("POST", body)

        return Handler
