"""The configured webhooks: reachable without sending (TCP, then TLS with requests' certificates), or a real
test message (`jobmon test-notify`, `jobmon doctor --send`)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from core.config import ERROR_SINK, SUCCESS_SINK, Config
from core.daemon.delivery import build_sinks
from core.daemon.liveness import this_host
from core.errors import ConfigError
from core.notify.deliver import send_once
from core.notify.events import EventKind, Route, RouteFacts
from core.notify.message import Envelope, Field, Message, Tone
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


def _by_destination(config: Config, names: Sequence[str] = ()) -> List[Tuple[SinkReport, Sink]]:
    """One report per destination (one URL may serve several sinks or routes), with a sink to send through.
    The `discord` shorthand is labelled by the routes its webhook serves; named sinks by their names."""
    chosen = {name: sink for name, sink in config.sinks.items() if not names or name in names}
    by_destination: Dict[str, List[Sink]] = {}
    for sink in build_sinks(chosen).values():
        by_destination.setdefault(sink.destination, []).append(sink)
    found = []
    for destination, sinks in by_destination.items():
        served = {sink.name for sink in sinks}
        if served <= {SUCCESS_SINK, ERROR_SINK}:
            label = "+".join(route.value for route in Route
                             if served & set(config.sinks_for(RouteFacts(EventKind.FINAL, route)))) or "no route"
        else:
            label = "+".join(sorted(served))
        found.append((SinkReport(label, sinks[0].describe(), destination), sinks[0]))
    return found


def reach(url: str, cafile: Optional[str], timeout: float = CONNECT_TIMEOUT) -> str:
    """Connect to the URL's host (and complete a TLS handshake for https) without sending anything;
    returns what failed, or "" when it answered."""
    import ssl

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
    return [SinkReport(r.label, r.described, r.url, reach(r.url, cafile)) for r, _ in _by_destination(config)]


def send_test_messages(config: Config, names: Sequence[str] = (), command: str = "test-notify") -> List[SinkReport]:
    """One test message per destination (of the sinks `names`, default all), whichever sinks or routes it serves."""
    unknown = [name for name in names if name not in config.sinks]
    if unknown:
        raise ConfigError(f"no sink named {unknown[0]!r} in config.json (configured: {', '.join(config.sinks)})")
    reports = []
    for report, sink in _by_destination(config, names):
        message = Message(
            title="jobmon test message",
            description=f"This destination receives jobmon's messages for {report.label}.",
            tone=Tone.SUCCESS if report.label == Route.SUCCESS.value else Tone.INFO,
            fields=(Field("Host", this_host()), Field("Sink", report.label)),
            footer=f"jobmon {command}",
        )
        now = time.time()
        outcome = send_once(sink, message, envelope=Envelope(f"test:{now:.0f}", "test", now))
        error = "" if outcome.answer is Answer.DELIVERED else (outcome.detail or outcome.answer.value)
        reports.append(SinkReport(report.label, report.described, report.url, error))
    return reports
