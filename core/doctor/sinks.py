"""The configured webhooks: reachable without sending (TCP, then TLS with requests' certificates), or a real
test message (`jobmon test-discord`, `jobmon doctor --send`)."""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Dict, List, Optional
from urllib.parse import urlsplit

from core.config import Config
from core.daemon.delivery import build_sinks
from core.daemon.liveness import this_host
from core.notify.deliver import send_once
from core.notify.events import Route
from core.notify.message import Field, Message, Tone
from core.notify.outbox import Answer
from core.notify.sink import Sink

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class SinkReport:
    """One webhook: the routes it serves (`success`, `error`, `success+error`), where it points (redacted),
    and what went wrong (empty: fine)."""

    label: str
    described: str
    url: str
    error: str = ""


def _by_destination(config: Config) -> List[SinkReport]:
    by_destination: Dict[str, List[Sink]] = {}
    for sink in build_sinks(config.sinks).values():
        by_destination.setdefault(sink.destination, []).append(sink)
    reports = []
    for destination, sinks in by_destination.items():
        names = {sink.name for sink in sinks}
        label = "+".join(route.value for route in Route if names & set(config.sinks_for(route))) or "no route"
        reports.append(SinkReport(label, sinks[0].describe(), destination))
    return reports


def reach(url: str, cafile: Optional[str], timeout: float = CONNECT_TIMEOUT) -> str:
    """Connect to the URL's host (and complete a TLS handshake for https) without sending anything;
    returns what failed, or "" when it answered."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "not a usable URL"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if parts.scheme == "https":
                context = ssl.create_default_context(cafile=cafile)
                with context.wrap_socket(raw, server_hostname=host):
                    pass
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except ssl.SSLError as exc:
        return f"TLS with {host}:{port} failed: {exc.reason or exc}"
    except socket.timeout:
        return f"no answer from {host}:{port} within {timeout:.0f} s (a firewall? a proxy needed?)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    return ""


def check_reachable(config: Config, cafile: Optional[str]) -> List[SinkReport]:
    return [SinkReport(r.label, r.described, r.url, reach(r.url, cafile)) for r in _by_destination(config)]


def send_test_messages(config: Config) -> List[SinkReport]:
    """One test message per webhook, whichever routes it serves."""
    reports = []
    for report in _by_destination(config):
        sink = next(s for s in build_sinks(config.sinks).values() if s.destination == report.url)
        message = Message(
            title="jobmon test message",
            description=f"This webhook receives jobmon's {report.label} messages.",
            tone=Tone.SUCCESS if report.label == Route.SUCCESS.value else Tone.INFO,
            fields=(Field("Host", this_host()), Field("Routes", report.label)),
            footer="jobmon test-discord",
        )
        outcome = send_once(sink, message)
        error = "" if outcome.answer is Answer.DELIVERED else (outcome.detail or outcome.answer.value)
        reports.append(SinkReport(report.label, report.described, report.url, error))
    return reports
