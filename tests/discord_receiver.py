"""A local stand-in for Discord's execute-webhook endpoint, for tests and demos.

It checks payloads against Discord's documented limits, answers like Discord
(204, or 200 with the created message for ``?wait=true``; 400/404/401/429 with
Discord-shaped JSON) and can be told to misbehave, one scripted behaviour per
webhook request, first in first out:

* ``("status", code)``      answer that error status (400..599); nothing is accepted.
* ``("ratelimit", seconds)`` 429 with a ``Retry-After`` header and a JSON ``retry_after``.
* ``("hang", seconds)``     sleep, then drop the connection WITHOUT accepting the
                            message. Discord would usually still post a message whose
                            answer came too late; this receiver does not, so a test can
                            assert "exactly one message" after a client timeout + retry.
* ``("close",)``            drop the connection at once, without an answer.
* ``("bucket_empty", s)``   accept normally but report ``X-RateLimit-Remaining: 0``
                            and ``X-RateLimit-Reset-After: s``.

Optional rate-limit emulation, off by default: ``DiscordReceiver(rate_limit=(5, 2.0))``
(script mode: ``--rate-limit 5/2``) lets each webhook take 5 requests per 2 s window, the
figure commonly reported for Discord webhooks (Discord itself says limits change and are to
be read from the headers). A webhook's window opens at its first request and closes
``SECONDS`` later, which ``X-RateLimit-Reset-After`` counts down. When it is on:

* accepted (200/204) and refused (400) requests use up the window and their answers carry
  ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset``,
  ``X-RateLimit-Reset-After`` and ``X-RateLimit-Bucket``; 404/401 use up nothing;
* a request over the limit gets 429 with those headers plus ``Retry-After`` and
  ``X-RateLimit-Scope``, and JSON ``{"message", "retry_after", "global": false}``; it is
  not recorded as a message (its hit says ``rate-limited``; script mode prints and records
  it as ``ratelimited``) and does not use up the window itself;
* scripted faults (status, ratelimit, hang, close) come first and use up nothing;
  ``bucket_empty`` uses up a request like any accepted one, then overrides the headers.

``rate_limited()`` counts the 429s served, scripted or emulated.

In-process use (pytest)::

    receiver = DiscordReceiver(); receiver.start()
    url = receiver.webhook_url("failure")
    receiver.enqueue(("status", 500))
    ...
    receiver.wait_for(1, timeout=5, webhook="failure"); receiver.stop()

As a separate process (demo or integration test)::

    python3 tests/discord_receiver.py --port 8765 --print --record received.jsonl

and drive it over HTTP: ``POST /_control/enqueue`` (JSON list of behaviours),
``GET /_control/messages``, ``GET /_control/rejected``, ``POST /_control/reset``,
``GET /_control/webhook_url?name=N``, ``GET /_control/rate_limited`` (``{"count": n}``).

Standard library only, thread-safe, binds 127.0.0.1 (port 0 = any free port) by default.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import secrets
import signal
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit

CONTENT_LIMIT = 2000
EMBEDS_LIMIT = 10
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
AUTHOR_NAME_LIMIT = 256
EMBED_TOTAL_LIMIT = 6000
USERNAME_LIMIT = 80
BODY_LIMIT = 8 * 1024 * 1024
DISCORD_EPOCH_MS = 1420070400000

WEBHOOK_PATH = re.compile(r"/api(?:/v\d+)?/webhooks/(\d+)/([^/]+)/?")
BEHAVIOUR_KINDS = ("status", "ratelimit", "hang", "close", "bucket_empty")

Behaviour = Tuple[Any, ...]
RateLimit = Tuple[int, float]  # (requests, seconds) per webhook
Violation = Tuple[Tuple[str, ...], str, str]  # (path, Discord error code, message)
Listener = Callable[[str, Dict[str, Any]], None]


# -------------------------------------------------------------------- validation


def _too_long(limit: int) -> Tuple[str, str]:
    return "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."


def _check_text(
    value: Any, path: Tuple[str, ...], limit: int, out: List[Violation], *, required: bool = False
) -> int:
    """Check one string; return its length for the 6000 total (0 if unusable)."""
    if value is None and not required:
        return 0
    if not isinstance(value, str):
        out.append((path, "STRING_TYPE_CONVERT", "Could not interpret value as string."))
        return 0
    if required and not value.strip():
        out.append((path, "BASE_TYPE_REQUIRED", "This field is required"))
    if len(value) > limit:
        out.append((path, *_too_long(limit)))
    return len(value)


def _check_url(value: Any, path: Tuple[str, ...], out: List[Violation]) -> None:
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"https?://\S+", value)):
        out.append((path, "URL_TYPE_INVALID_URL", "Not a well formed URL."))


def _check_embed(embed: Any, path: Tuple[str, ...], out: List[Violation]) -> int:
    """Check one embed; return its character count toward the message total."""
    if not isinstance(embed, dict):
        out.append((path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"))
        return 0
    total = _check_text(embed.get("title"), path + ("title",), TITLE_LIMIT, out)
    total += _check_text(embed.get("description"), path + ("description",), DESCRIPTION_LIMIT, out)
    _check_url(embed.get("url"), path + ("url",), out)
    color = embed.get("color")
    if color is not None and (isinstance(color, bool) or not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
        out.append((path + ("color",), "NUMBER_TYPE_MAX", "int value should be between 0 and 16777215."))
    stamp = embed.get("timestamp")
    if stamp is not None:
        try:
            datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            out.append((path + ("timestamp",), "DATE_TYPE_PARSE", "Could not parse timestamp."))
    fields = embed.get("fields")
    if fields is not None:
        if not isinstance(fields, list):
            out.append((path + ("fields",), "LIST_TYPE_CONVERT", "Must be an array."))
        else:
            if len(fields) > FIELDS_LIMIT:
                out.append((path + ("fields",), "BASE_TYPE_MAX_LENGTH", f"Must be {FIELDS_LIMIT} or fewer in length."))
            for i, field in enumerate(fields):
                where = path + ("fields", str(i))
                if not isinstance(field, dict):
                    out.append((where, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"))
                    continue
                total += _check_text(field.get("name"), where + ("name",), FIELD_NAME_LIMIT, out, required=True)
                total += _check_text(field.get("value"), where + ("value",), FIELD_VALUE_LIMIT, out, required=True)
    footer = embed.get("footer")
    if footer is not None:
        if isinstance(footer, dict):
            total += _check_text(footer.get("text"), path + ("footer", "text"), FOOTER_LIMIT, out, required=True)
        else:
            out.append((path + ("footer",), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"))
    author = embed.get("author")
    if author is not None:
        if isinstance(author, dict):
            total += _check_text(author.get("name"), path + ("author", "name"), AUTHOR_NAME_LIMIT, out, required=True)
        else:
            out.append((path + ("author",), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"))
    return total


def validate_payload(body: Any) -> List[Violation]:
    """Every way ``body`` breaks Discord's execute-webhook rules (empty list if none)."""
    out: List[Violation] = []
    if not isinstance(body, dict):
        return [((), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")]
    _check_text(body.get("content"), ("content",), CONTENT_LIMIT, out)
    username = body.get("username")
    if username is not None:
        _check_text(username, ("username",), USERNAME_LIMIT, out, required=True)
    embeds = body.get("embeds")
    if embeds is not None:
        if not isinstance(embeds, list):
            out.append((("embeds",), "LIST_TYPE_CONVERT", "Must be an array."))
        else:
            if len(embeds) > EMBEDS_LIMIT:
                out.append((("embeds",), "BASE_TYPE_MAX_LENGTH", f"Must be {EMBEDS_LIMIT} or fewer in length."))
            total = sum(_check_embed(embed, ("embeds", str(i)), out) for i, embed in enumerate(embeds))
            if total > EMBED_TOTAL_LIMIT:
                out.append((("embeds",), "MAX_EMBED_SIZE_EXCEEDED",
                            f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}"))
    mentions = body.get("allowed_mentions")
    if mentions is not None and not (
        isinstance(mentions, dict)
        and isinstance(mentions.get("parse", []), list)
        and set(mentions.get("parse", [])) <= {"roles", "users", "everyone"}
    ):
        out.append((("allowed_mentions",), "MODEL_TYPE_CONVERT", "Invalid allowed_mentions."))
    return out


def _errors_tree(violations: Sequence[Violation]) -> Dict[str, Any]:
    """Discord's nested ``errors`` object: path keys down to ``_errors`` lists."""
    tree: Dict[str, Any] = {}
    for path, code, message in violations:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return tree


def _is_empty_message(body: Dict[str, Any]) -> bool:
    content = body.get("content")
    return not (isinstance(content, str) and content.strip()) and not body.get("embeds")


def parse_behaviour(raw: Any) -> Behaviour:
    """Check one scripted behaviour (tuple or JSON list) and return it as a tuple."""
    if isinstance(raw, str):
        raw = (raw,)
    if not isinstance(raw, (list, tuple)) or not raw or raw[0] not in BEHAVIOUR_KINDS:
        raise ValueError(f"unknown behaviour {raw!r}; kinds are {', '.join(BEHAVIOUR_KINDS)}")
    kind, args = raw[0], tuple(raw[1:])
    if kind == "close":
        if args:
            raise ValueError("('close',) takes no argument")
        return ("close",)
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], (int, float)):
        raise ValueError(f"({kind!r}, number) expected, got {raw!r}")
    if kind == "status":
        if not isinstance(args[0], int) or not 400 <= args[0] <= 599:
            raise ValueError(f"('status', code) needs an error code 400..599, got {args[0]!r}")
        return ("status", args[0])
    if args[0] < 0:
        raise ValueError(f"({kind!r}, seconds) needs seconds >= 0, got {args[0]!r}")
    return (kind, float(args[0]))


def parse_rate_limit(raw: Any) -> RateLimit:
    """``(requests, seconds)`` or the text ``"N/SECONDS"`` (e.g. ``"5/2"``) as a checked tuple."""
    if isinstance(raw, str):
        count, slash, period = raw.partition("/")
        if not slash:
            raise ValueError(f"rate limit {raw!r} should look like N/SECONDS, e.g. 5/2")
        try:
            raw = (int(count), float(period))
        except ValueError:
            raise ValueError(f"rate limit {raw!r} should look like N/SECONDS, e.g. 5/2") from None
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError(f"rate limit should be (requests, seconds), got {raw!r}")
    count, period = raw
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"rate limit needs at least 1 request per window, got {count!r}")
    if isinstance(period, bool) or not isinstance(period, (int, float)) or not 0 < period < math.inf:
        raise ValueError(f"rate limit needs a window of more than 0 seconds, got {period!r}")
    return (count, float(period))


def _up_to_ms(seconds: float) -> float:
    """Round a wait up to the millisecond, so a client that obeys it never comes back early."""
    return math.ceil(max(0.0, seconds) * 1000) / 1000


# ---------------------------------------------------------------------- receiver


class DiscordReceiver:
    """An HTTP server that behaves like Discord's execute-webhook endpoint."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        deleted: Iterable[str] = (),
        unauthorised: Iterable[str] = (),
        listener: Optional[Listener] = None,
        rate_limit: Optional[RateLimit] = None,
    ) -> None:
        self._address = (host, port)
        self.rate_limit = parse_rate_limit(rate_limit) if rate_limit is not None else None
        self._windows: Dict[str, Tuple[float, int]] = {}  # webhook id -> (window start, requests used)
        self._rate_limited = 0
        self._listener = listener
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._deleted = set(deleted)
        self._unauthorised = set(unauthorised)
        self._webhooks: Dict[str, Tuple[str, str]] = {}  # name -> (id, token)
        self._names: Dict[str, str] = {}  # id -> name
        self._queue: List[Behaviour] = []
        self._messages: List[Dict[str, Any]] = []
        self._rejected: List[Dict[str, Any]] = []
        self._hits: List[Dict[str, Any]] = []
        self._in_flight = 0
        self._sequence = 0
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle

    def start(self) -> str:
        """Start serving in a background thread; return the base URL."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _Server(self._address, _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="discord-receiver", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; hanging requests are released at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> DiscordReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("receiver not started")
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    # -- webhooks

    def webhook_url(self, name: str = "success") -> str:
        """A stable webhook URL for ``name``; messages to it are filed under ``name``."""
        with self._lock:
            if name not in self._webhooks:
                hook_id = self._snowflake()
                self._webhooks[name] = (hook_id, secrets.token_urlsafe(51))
                self._names[hook_id] = name
            hook_id, token = self._webhooks[name]
        return f"{self.base_url}/api/webhooks/{hook_id}/{token}"

    def delete_webhook(self, name_or_id: str) -> None:
        """Make the webhook answer 404 Unknown Webhook, like one deleted in Discord."""
        with self._lock:
            self._deleted.add(name_or_id)

    def revoke_webhook(self, name_or_id: str) -> None:
        """Make the webhook answer 401 Invalid Webhook Token."""
        with self._lock:
            self._unauthorised.add(name_or_id)

    # -- scripting and inspection

    def enqueue(self, *behaviours: Any) -> None:
        """Queue behaviours for the next webhook requests (validated before any is queued)."""
        parsed = [parse_behaviour(b) for b in behaviours]
        with self._lock:
            self._queue.extend(parsed)

    def messages(self, webhook: Optional[str] = None) -> List[Dict[str, Any]]:
        """Accepted messages (``webhook``, ``webhook_id``, ``query``, ``payload``, ``message_id``)."""
        with self._lock:
            return [dict(m) for m in self._messages if self._matches(m, webhook)]

    def rejected(self) -> List[Dict[str, Any]]:
        """Requests answered 400, with the ``reasons`` Discord would give."""
        with self._lock:
            return [dict(r) for r in self._rejected]

    def hits(self) -> List[Dict[str, Any]]:
        """Every webhook request seen, with what the receiver did (``result``)."""
        with self._lock:
            return [dict(h) for h in self._hits]

    def rate_limited(self) -> int:
        """How many 429 answers were served (scripted ``ratelimit`` and emulated limit alike)."""
        with self._lock:
            return self._rate_limited

    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._queue)

    def wait_for(self, count: int, timeout: float = 5.0, webhook: Optional[str] = None) -> List[Dict[str, Any]]:
        """Wait until ``count`` messages are accepted; raise TimeoutError saying how many came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [dict(m) for m in self._messages if self._matches(m, webhook)]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    break
                self._changed.wait(remaining)
        if len(found) < count:
            raise TimeoutError(f"got {len(found)} of {count} messages within {timeout:g}s")
        return found

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a hang has ended); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def reset(self) -> None:
        """Forget messages, rejections, hits, queued behaviours, 429 count and rate-limit windows.

        Webhook URLs stay valid.
        """
        with self._changed:
            self._queue.clear()
            self._messages.clear()
            self._rejected.clear()
            self._hits.clear()
            self._windows.clear()
            self._rate_limited = 0
            self._changed.notify_all()

    # -- used by the handler

    @staticmethod
    def _matches(entry: Dict[str, Any], webhook: Optional[str]) -> bool:
        return webhook is None or webhook in (entry["webhook"], entry["webhook_id"])

    def _snowflake(self) -> str:
        """An id shaped like Discord's: milliseconds since its epoch, shifted, plus a counter."""
        self._sequence += 1
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (self._sequence & 0x3FFFFF))

    def _take_slot(self, hook_id: str) -> Tuple[bool, Dict[str, str], float]:
        """Use one request of the webhook's window: (allowed, headers to send, seconds to reset)."""
        assert self.rate_limit is not None
        limit, period = self.rate_limit
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(hook_id, (now, 0))
            if now - start >= period:
                start, used = now, 0
            allowed = used < limit
            if allowed:
                used += 1
            else:
                self._rate_limited += 1
            self._windows[hook_id] = (start, used)
        reset_after = _up_to_ms(start + period - now)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:g}",
            "X-RateLimit-Bucket": f"webhook-{hook_id}",
        }
        return allowed, headers, reset_after

    def _count_429(self) -> None:
        with self._lock:
            self._rate_limited += 1

    def _next_behaviour(self) -> Optional[Behaviour]:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    def _state_of(self, hook_id: str) -> str:
        with self._lock:
            keys = {hook_id, self._names.get(hook_id, hook_id)}
            if keys & self._deleted:
                return "deleted"
            if keys & self._unauthorised:
                return "unauthorised"
            return "ok"

    def _name_of(self, hook_id: str) -> str:
        with self._lock:
            return self._names.get(hook_id, hook_id)

    def _record(self, kind: str, entry: Dict[str, Any]) -> Dict[str, Any]:
        entry["received_at"] = time.time()
        with self._changed:
            if kind == "accepted":
                entry["message_id"] = self._snowflake()
                self._messages.append(entry)
            elif kind == "rejected":
                self._rejected.append(entry)
            self._hits.append({key: entry[key] for key in ("webhook", "webhook_id", "result")})
            self._changed.notify_all()
        if self._listener is not None and kind in ("accepted", "rejected", "ratelimited"):
            self._listener(kind, dict(entry))
        return entry

    def _enter(self) -> None:
        with self._changed:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()


class _Server(ThreadingHTTPServer):
    """Threaded server with room for bursts of connections (the default backlog of 5 resets them)."""

    daemon_threads = True
    request_queue_size = 128
    receiver: DiscordReceiver


class _Handler(BaseHTTPRequestHandler):
    """One request; the receiver holds all state."""

    server_version = "discord-receiver/1"

    @property
    def receiver(self) -> DiscordReceiver:
        return self.server.receiver  # type: ignore[attr-defined]  # set by DiscordReceiver.start

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        """Stay quiet: tests and the demo print what matters themselves."""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self.receiver._enter()
        try:
            parts = urlsplit(self.path)
            body = self._read_body()
            if body is None:
                return
            if parts.path.startswith("/_control/"):
                self._control(method, parts.path, dict(parse_qsl(parts.query)), body)
                return
            match = WEBHOOK_PATH.fullmatch(parts.path)
            if not match:
                self._json(404, {"message": "Unknown Webhook", "code": 10015})
            elif method != "POST":
                self._json(405, {"message": "405: Method Not Allowed", "code": 0})
            else:
                self._webhook(match.group(1), dict(parse_qsl(parts.query, keep_blank_values=True)), body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up first; nothing left to tell it
        finally:
            self.receiver._leave()

    def _read_body(self) -> Optional[bytes]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= BODY_LIMIT:
            self._json(413, {"message": "Request entity too large", "code": 40005})
            return None
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        """End the connection without any answer, like a network failure."""
        self.close_connection = True

    def _webhook(self, hook_id: str, query: Dict[str, str], raw: bytes) -> None:
        receiver = self.receiver
        entry: Dict[str, Any] = {"webhook": receiver._name_of(hook_id), "webhook_id": hook_id, "query": query}
        behaviour = receiver._next_behaviour()
        limits = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset-After": "1",
                  "X-RateLimit-Bucket": f"webhook-{hook_id}"}
        if behaviour is not None:
            kind = behaviour[0]
            if kind == "close":
                receiver._record("fault", {**entry, "result": "close"})
                self._drop()
                return
            if kind == "hang":
                receiver._record("fault", {**entry, "result": f"hang {behaviour[1]:g}s"})
                receiver._stopping.wait(behaviour[1])
                self._drop()
                return
            if kind == "status":
                receiver._record("fault", {**entry, "result": f"status {behaviour[1]}"})
                self._json(behaviour[1], {"message": f"{behaviour[1]}: simulated error", "code": 0}, limits)
                return
            if kind == "ratelimit":
                seconds = behaviour[1]
                receiver._count_429()
                receiver._record("fault", {**entry, "result": f"ratelimit {seconds:g}s"})
                self._json(429, {"message": "You are being rate limited.", "retry_after": seconds, "global": False},
                           {**limits, "Retry-After": f"{seconds:g}", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset-After": f"{seconds:g}", "X-RateLimit-Scope": "shared"})
                return

        state = receiver._state_of(hook_id)
        if state == "deleted":
            receiver._record("gone", {**entry, "result": "404"})
            self._json(404, {"message": "Unknown Webhook", "code": 10015})
            return
        if state == "unauthorised":
            receiver._record("gone", {**entry, "result": "401"})
            self._json(401, {"message": "Invalid Webhook Token", "code": 50027})
            return
        if receiver.rate_limit is not None:
            allowed, limits, retry_after = receiver._take_slot(hook_id)
            if not allowed:
                receiver._record("ratelimited", {**entry, "result": "rate-limited"})
                self._json(429, {"message": "You are being rate limited.", "retry_after": retry_after,
                                 "global": False},
                           {**limits, "Retry-After": f"{retry_after:g}", "X-RateLimit-Scope": "shared"})
                return
        if behaviour is not None:
            # bucket_empty: accept, but tell the client to pause.
            limits.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{behaviour[1]:g}"})
        limits_400 = limits if receiver.rate_limit is not None else None  # emulated limits count refusals too

        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            reasons = ["body: not valid JSON"]
            receiver._record("rejected", {**entry, "payload": raw.decode("utf-8", "replace"), "reasons": reasons,
                                          "result": "400"})
            self._json(400, {"message": "The request body contains invalid JSON.", "code": 50109}, limits_400)
            return
        violations = validate_payload(payload)
        if violations:
            reasons = [f"{'.'.join(path) or 'body'}: {message}" for path, _, message in violations]
            receiver._record("rejected", {**entry, "payload": payload, "reasons": reasons, "result": "400"})
            self._json(400, {"message": "Invalid Form Body", "code": 50035, "errors": _errors_tree(violations)},
                       limits_400)
            return
        if _is_empty_message(payload):
            receiver._record("rejected", {**entry, "payload": payload, "reasons": ["Cannot send an empty message"],
                                          "result": "400"})
            self._json(400, {"message": "Cannot send an empty message", "code": 50006}, limits_400)
            return

        accepted = receiver._record("accepted", {**entry, "payload": payload, "result": "accepted"})
        if query.get("wait", "").lower() == "true":
            self._json(200, {
                "id": accepted["message_id"],
                "type": 0,
                "channel_id": "0",
                "webhook_id": hook_id,
                "content": payload.get("content", ""),
                "embeds": payload.get("embeds", []),
                "author": {"id": hook_id, "username": payload.get("username", entry["webhook"]), "bot": True},
                "timestamp": datetime.now().astimezone().isoformat(),
            }, limits)
        else:
            self.send_response(204)
            for key, value in limits.items():
                self.send_header(key, value)
            self.end_headers()

    def _control(self, method: str, path: str, query: Dict[str, str], raw: bytes) -> None:
        receiver = self.receiver
        if method == "POST" and path == "/_control/enqueue":
            try:
                behaviours = json.loads(raw.decode("utf-8") or "null")
                if not isinstance(behaviours, list):
                    raise ValueError("expected a JSON list of behaviours, e.g. [[\"status\", 500]]")
                receiver.enqueue(*behaviours)
            except (UnicodeDecodeError, ValueError) as exc:
                self._json(400, {"message": str(exc)})
                return
            self._json(200, {"pending": receiver.pending()})
        elif method == "POST" and path == "/_control/reset":
            receiver.reset()
            self._json(200, {"pending": 0})
        elif method == "GET" and path == "/_control/messages":
            self._json(200, receiver.messages(query.get("webhook")))
        elif method == "GET" and path == "/_control/rejected":
            self._json(200, receiver.rejected())
        elif method == "GET" and path == "/_control/webhook_url":
            self._json(200, {"url": receiver.webhook_url(query.get("name", "success"))})
        elif method == "GET" and path == "/_control/rate_limited":
            self._json(200, {"count": receiver.rate_limited()})
        else:
            self._json(404, {"message": f"unknown control request {method} {path}"})


# ------------------------------------------------------------------------ script


def _describe(kind: str, entry: Dict[str, Any]) -> str:
    """A readable rendering of one received (or refused) message for the demo terminal."""
    colours = {0x2ECC71: "green", 0xE74C3C: "red", 0xE67E22: "orange", 0x3498DB: "blue"}
    payload = entry.get("payload")
    head = f"=== {kind} · webhook {entry['webhook']}"
    if entry["webhook"] != entry["webhook_id"]:
        head += f" (id {entry['webhook_id']})"
    if entry.get("query"):
        head += " · " + "&".join(f"{k}={v}" for k, v in entry["query"].items())
    lines = [head]
    if kind == "rejected":
        lines += [f"  ! {reason}" for reason in entry.get("reasons", [])]
    if not isinstance(payload, dict):
        return "\n".join(lines)
    if payload.get("username"):
        lines.append(f"  from: {payload['username']}")
    if payload.get("content"):
        lines.append(f"  {payload['content']}")
    for embed in payload.get("embeds") or []:
        if not isinstance(embed, dict):
            continue
        color = embed.get("color")
        swatch = colours.get(color, f"#{color:06x}" if isinstance(color, int) else "no colour")
        lines.append(f"  [{swatch}] {embed.get('title', '')}")
        if embed.get("url"):
            lines.append(f"  link: {embed['url']}")
        lines += [f"  | {line}" for line in str(embed.get("description", "")).splitlines()]
        for field in embed.get("fields") or []:
            if isinstance(field, dict):
                lines.append(f"  * {field.get('name')}: {field.get('value')}")
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text"):
            lines.append(f"  -- {footer['text']}")
        if embed.get("timestamp"):
            lines.append(f"  @ {embed['timestamp']}")
    return "\n".join(lines)


def _rate_limit_arg(text: str) -> RateLimit:
    try:
        return parse_rate_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Local Discord execute-webhook receiver for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind, 0 = any free port (default 8765)")
    parser.add_argument("--print", dest="show", action="store_true", help="print each message readably")
    parser.add_argument("--record", metavar="FILE", help="append each message as a JSON line to FILE")
    parser.add_argument("--rate-limit", metavar="N/SECONDS", type=_rate_limit_arg,
                        help="emulate Discord's per-webhook limit, e.g. 5/2 (default: no limit)")
    args = parser.parse_args(argv)

    write_lock = threading.Lock()

    def listener(kind: str, entry: Dict[str, Any]) -> None:
        with write_lock:
            if args.show:
                print(_describe(kind, entry), flush=True)
            if args.record:
                with open(args.record, "a", encoding="utf-8") as out:
                    out.write(json.dumps({"event": kind, **entry}, ensure_ascii=False) + "\n")

    receiver = DiscordReceiver(args.host, args.port, listener=listener, rate_limit=args.rate_limit)
    try:
        base = receiver.start()
    except OSError as exc:
        print(f"discord_receiver: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"listening on {base} (example webhook: {receiver.webhook_url('demo')})", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
