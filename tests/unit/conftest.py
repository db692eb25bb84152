"""Fixtures shared by the unit tests."""
from __future__ import annotations

import pytest

from tests.discord_receiver import DiscordReceiver


@pytest.fixture
def receiver():
    """A local Discord-compatible receiver on a free loopback port, stopped after the test."""
    server = DiscordReceiver()
    server.start()
    yield server
    server.stop()
