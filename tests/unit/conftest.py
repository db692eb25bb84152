"""Fixtures shared by the unit tests (the fakes and loaders themselves live in tests/support.py)."""
from __future__ import annotations

import io
from typing import Iterator

import pytest

from core.analysis.analyzer import parse_patterns
from core.config import BUILTIN_PATTERNS
from core.logs import INFO, log
from core.state.model import JobRecord
from core.state.store import StateStore
from tests.discord_receiver import DiscordReceiver

#: The job the monitor stories follow (its fixtures: tests/fixtures/slurm, sacct_oom.txt is job 4).
STORY_JOB = "4"


@pytest.fixture
def receiver():
    """A local Discord-compatible receiver on a free loopback port, stopped after the test."""
    server = DiscordReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What jobmon's processes log (core.logs) at INFO and above, as a monitor log would record it."""
    lines = io.StringIO()
    before = (log.stream, log.tag, log.level)
    log.stream, log.tag, log.level = lines, "", INFO
    yield lines
    log.stream, log.tag, log.level = before


@pytest.fixture(scope="session")
def patterns():
    """The built-in pattern library, parsed once."""
    with open(BUILTIN_PATTERNS, encoding="utf-8") as handle:
        return parse_patterns(handle.read(), BUILTIN_PATTERNS)


@pytest.fixture
def story_store(tmp_path) -> StateStore:
    """A state folder with job 4 ("train"), whose stdout and stderr are one empty file, tmp_path/job.err."""
    state = tmp_path / "state"
    state.mkdir()
    store = StateStore(str(state))
    err = tmp_path / "job.err"
    err.write_text("")
    store.create(JobRecord(job_id=STORY_JOB, name="train", stdout_path=str(err), stderr_path=str(err)))
    return store
