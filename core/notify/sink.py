"""The Sink interface: one destination for messages (Discord, Slack, Teams, ntfy, email, a generic webhook).

A sink renders a message within its own service's limits (it truncates, never fails), makes one
delivery attempt, and classifies the answer (core.notify.outbox.Outcome): delivered, retry later
(with the wait the service asked for), or gone for good. Retries, backoff and exactly-once
bookkeeping live in the outbox and its deliverer, once for all sinks. A sink knows nothing of
Slurm or of job records, and never puts a secret (a URL's token) into what it returns.
"""
from __future__ import annotations

import abc
from typing import Any, Optional

from core.notify.message import Envelope, Message
from core.notify.outbox import Outcome


class Sink(abc.ABC):
    """One configured destination; `name` is its key in config and in each outbox delivery."""

    #: Shared pacing across all of a user's monitors: at least this many seconds between two
    #: messages to one destination, and at most `per_minute` of them in any 60 s.
    min_spacing: float = 0.5
    per_minute: int = 25

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abc.abstractmethod
    def destination(self) -> str:
        """What identifies the service endpoint for pacing (never shown: it may be a secret)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where it goes, safe to print (`discord https://discord.com/api/webhooks/123/****`)."""

    @abc.abstractmethod
    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Any:
        """The service's request body for this message, within the service's documented limits.

        `envelope` names the event (its outbox key, kind and time) for sinks that send it along; a test
        message outside any outbox has none."""

    @abc.abstractmethod
    def deliver(self, payload: Any, timeout: float) -> Outcome:
        """One attempt to deliver a rendered payload; never raises for network or HTTP problems."""
