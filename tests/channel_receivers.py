"""Local stand-ins for Slack, Teams, ntfy, a signed CloudEvents webhook and an SMTP server, for tests.

Each enforces its service's documented limits and refuses what the service would refuse (recorded in
`rejected`), and can be told to misbehave, one scripted answer per request to a path, first in
first out: `("status", code)` or `("ratelimit", seconds)` (429 with Retry-After). Standard library
only; binds 127.0.0.1 on a free port.

* /slack/<name>   Block Kit: `text` fallback, <= 50 blocks, header plain_text <= 150 characters,
                  section text <= 3000, <= 10 fields of <= 2000 (docs.slack.dev Block Kit reference).
* /teams/<name>   the Workflows envelope with one Adaptive Card, body <= 28 KB (bytes); answers 202.
* /ntfy/<topic>   body <= 4096 bytes (ntfy would turn more into an attachment), Title decoded from
                  RFC 2047, Priority among ntfy's names; with `ntfy_token` set, anything else is 401.
* /hook/<name>    CloudEvents 1.0 structured JSON (specversion, id, source, type required);
                  with `hook_secret` set, `X-Jobmon-Signature` must be the body's HMAC-SHA256, else 401.
* SmtpReceiver    EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT; lines <= 1000 octets
                  (RFC 5321); with `user`/`password` set, a login is required (535 on a bad one).
"""
from __future__ import annotations

import base64
import email
import email.header
import email.policy
import hashlib
import hmac
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

SLACK_HEADER_LIMIT, SLACK_SECTION_LIMIT, SLACK_FIELD_LIMIT, SLACK_FIELDS, SLACK_BLOCKS = 150, 3000, 2000, 10, 50
TEAMS_LIMIT = 28 * 1024
NTFY_BODY_LIMIT = 4096
NTFY_PRIORITIES = {"1", "2", "3", "4", "5", "min", "low", "default", "high", "max", "urgent"}
SMTP_LINE_LIMIT = 1000


def slack_problems(payload: Any) -> List[str]:
    problems = []
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str) or not payload["text"].strip():
        return ["no text fallback"]
    blocks = payload.get("blocks", [])
    if len(blocks) > SLACK_BLOCKS:
        problems.append(f"{len(blocks)} blocks")
    for n, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header":
            text = block["text"]
            if text.get("type") != "plain_text" or len(text["text"]) > SLACK_HEADER_LIMIT:
                problems.append(f"blocks[{n}] header")
        elif kind == "section":
            if "text" in block and len(block["text"]["text"]) > SLACK_SECTION_LIMIT:
                problems.append(f"blocks[{n}] section text {len(block['text']['text'])}")
            fields = block.get("fields", [])
            if len(fields) > SLACK_FIELDS or any(len(f["text"]) > SLACK_FIELD_LIMIT for f in fields):
                problems.append(f"blocks[{n}] fields")
            if "text" not in block and not fields:
                problems.append(f"blocks[{n}] empty section")
        elif kind == "context":
            if any(len(e["text"]) > SLACK_SECTION_LIMIT for e in block["elements"]):
                problems.append(f"blocks[{n}] context")
        else:
            problems.append(f"blocks[{n}] unknown type {kind}")
    return problems


def teams_problems(body: bytes) -> List[str]:
    if len(body) > TEAMS_LIMIT:
        return [f"{len(body)} bytes > {TEAMS_LIMIT}"]
    payload = json.loads(body)
    attachments = payload.get("attachments") or [{}]
    card = attachments[0]
    if payload.get("type") != "message" or card.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return ["not the Workflows envelope"]
    if card.get("content", {}).get("type") != "AdaptiveCard" or not card["content"].get("body"):
        return ["no Adaptive Card"]
    return []


def cloudevent_problems(event: Any) -> List[str]:
    missing = [key for key in ("specversion", "id", "source", "type") if not event.get(key)]
    problems = [f"missing {key}" for key in missing]
    if event.get("specversion") not in (None, "1.0"):
        problems.append("specversion is not 1.0")
    return problems


def decode_title(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.strip("/").split("/")
        service, name = parts[0], "/".join(parts[1:])
        scripted = owner.next_behaviour(service)
        if scripted is not None:
            owner.record_hit(service, scripted[0])
            if scripted[0] == "ratelimit":
                return self._answer(429, b"rate limited", {"Retry-After": str(scripted[1])})
            return self._answer(int(scripted[1]), b"scripted error")
        status, problems, record = owner.check(service, name, body, dict(self.headers.items()))
        if problems:
            owner.reject(service, problems)
        else:
            owner.accept(service, record)
        owner.record_hit(service, str(status))
        self._answer(status, b"ok" if status < 300 else ("; ".join(problems)).encode())

    def _answer(self, status: int, body: bytes, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ChannelReceiver


class ChannelReceiver:
    """Slack, Teams, ntfy and webhook endpoints on one local port."""

    def __init__(self, ntfy_token: str = "", hook_secret: str = "") -> None:
        self.ntfy_token, self.hook_secret = ntfy_token, hook_secret
        self._lock = threading.Lock()
        self.messages: Dict[str, List[Dict[str, Any]]] = {}
        self.rejected: Dict[str, List[List[str]]] = {}
        self.hits: Dict[str, List[str]] = {}
        self._script: Dict[str, List[Tuple[Any, ...]]] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ChannelReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, service: str, name: str = "x") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{service}/{name}"

    def enqueue(self, service: str, *behaviours: Tuple[Any, ...]) -> None:
        with self._lock:
            self._script.setdefault(service, []).extend(behaviours)

    def next_behaviour(self, service: str) -> Optional[Tuple[Any, ...]]:
        with self._lock:
            queue = self._script.get(service) or []
            return queue.pop(0) if queue else None

    def record_hit(self, service: str, what: str) -> None:
        with self._lock:
            self.hits.setdefault(service, []).append(what)

    def accept(self, service: str, record: Dict[str, Any]) -> None:
        with self._lock:
            self.messages.setdefault(service, []).append(record)

    def reject(self, service: str, problems: List[str]) -> None:
        with self._lock:
            self.rejected.setdefault(service, []).append(problems)

    def check(self, service: str, name: str, body: bytes, headers: Dict[str, str]
              ) -> Tuple[int, List[str], Dict[str, Any]]:
        lower = {key.lower(): value for key, value in headers.items()}
        if service == "slack":
            payload = json.loads(body)
            problems = slack_problems(payload)
            return (400 if problems else 200), problems, {"payload": payload}
        if service == "teams":
            problems = teams_problems(body)
            return (400 if problems else 202), problems, {"payload": json.loads(body) if not problems else None}
        if service == "ntfy":
            if self.ntfy_token and lower.get("authorization") != f"Bearer {self.ntfy_token}":
                return 401, ["bad token"], {}
            problems = [f"body {len(body)} bytes"] if len(body) > NTFY_BODY_LIMIT else []
            if lower.get("priority", "default") not in NTFY_PRIORITIES:
                problems.append("bad priority")
            title = decode_title(lower.get("title", ""))
            return (400 if problems else 200), problems, {"topic": name, "title": title,
                                                          "body": body.decode("utf-8"), "headers": lower}
        if service == "hook":
            if self.hook_secret:
                expected = "sha256=" + hmac.new(self.hook_secret.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(lower.get("x-jobmon-signature", ""), expected):
                    return 401, ["bad signature"], {}
            event = json.loads(body)
            problems = cloudevent_problems(event)
            return (400 if problems else 200), problems, {"event": event, "headers": lower}
        return 404, ["no such service"], {}


# ------------------------------------------------------------------------------------ SMTP


class _SmtpHandler(socketserver.StreamRequestHandler):
    server: _SmtpServer

    def reply(self, text: str) -> None:
        self.wfile.write((text + "\r\n").encode())

    def handle(self) -> None:
        owner = self.server.owner
        self.reply("220 localhost jobmon test SMTP")
        sender, recipients, authed = "", [], not owner.user
        while True:
            line = self.rfile.readline(SMTP_LINE_LIMIT + 2)
            if not line:
                return
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME" if verb == "EHLO" else "250 localhost")
            elif verb == "AUTH":
                parts = command.split()
                token = parts[2] if len(parts) > 2 else ""
                fields = base64.b64decode(token).split(b"\0") if token else []
                if len(fields) == 3 and fields[1].decode() == owner.user and fields[2].decode() == owner.password:
                    authed = True
                    self.reply("235 2.7.0 Authentication successful")
                else:
                    self.reply("535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                if not authed:
                    self.reply("530 5.7.0 Authentication required")
                    continue
                sender = command.split(":", 1)[1].strip().strip("<>").split()[0].strip("<>")
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data, too_long = [], False
                while True:
                    raw = self.rfile.readline(SMTP_LINE_LIMIT + 2)
                    if len(raw) > SMTP_LINE_LIMIT:
                        too_long = True
                    if raw in (b".\r\n", b".\n", b""):
                        break
                    data.append(raw[1:] if raw.startswith(b"..") else raw)
                if too_long:
                    owner.rejected.append("line over 1000 octets")
                    self.reply("500 5.5.2 Line too long")
                    continue
                message = email.message_from_bytes(b"".join(data), policy=email.policy.default)
                owner.messages.append({"from": sender, "to": list(recipients), "message": message})
                sender, recipients = "", []
                self.reply("250 OK queued")
            elif verb == "RSET":
                sender, recipients = "", []
                self.reply("250 OK")
            elif verb == "NOOP":
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not implemented")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: SmtpReceiver


class SmtpReceiver:
    def __init__(self, user: str = "", password: str = "") -> None:
        self.user, self.password = user, password
        self.messages: List[Dict[str, Any]] = []
        self.rejected: List[str] = []
        self._server = _SmtpServer(("127.0.0.1", 0), _SmtpHandler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SmtpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
