"""What to tell people, independent of any service's wire format and limits.

A message is built once, when its event happens, and stored in the job's outbox; each sink renders
it within its own service's limits when it delivers. Knows nothing of Slurm or of the state folder.

Text handling: `title` and field names and values are plain text (a sink escapes what its service
would read as markup: a job named `my_*run*` shows as typed); `description` and `footer` are composed
by jobmon itself and passed through as they are; `excerpt` is raw log text, shown verbatim (in a code
block where the service has one).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Tuple


class Tone(str, enum.Enum):
    """How the news should look: a sink maps this to a colour, an emoji or a priority."""

    SUCCESS = "success"
    FAILURE = "failure"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Field:
    """One labelled value (`Exit code: 137`); `inline` fields may sit side by side."""

    name: str
    value: str
    inline: bool = True


@dataclass(frozen=True)
class Facts:
    """What a message is about, as plain values: route filters match `state` and `name`, and sinks that
    speak to machines (the generic webhook, an email subject) send them. Empty when not known."""

    job_id: str = ""
    name: str = ""
    state: str = ""  # FAILED, OUT_OF_MEMORY ... for an ending; RUNNING for news while the job runs
    exit_code: str = ""
    findings: Tuple[str, ...] = ()  # categories, root cause first
    efficiency: str = ""  # e.g. peak memory of requested
    progress: str = ""


@dataclass(frozen=True)
class Envelope:
    """Which event a message tells (from its outbox entry): its stable key, its kind and when it happened."""

    key: str
    kind: str
    created_at: float


@dataclass(frozen=True)
class Message:
    """A title, a few lines of description, labelled fields, an optional log excerpt and a footer."""

    title: str
    description: str = ""
    tone: Tone = Tone.INFO
    fields: Tuple[Field, ...] = ()
    excerpt: str = ""
    footer: str = ""
    url: str = ""
    facts: Facts = Facts()

    def __post_init__(self) -> None:
        # A list passed in would leave the frozen message mutable from outside.
        object.__setattr__(self, "fields", tuple(self.fields))
