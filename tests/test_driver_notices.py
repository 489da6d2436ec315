"""A high-tier request interrupts the person at the driver: ``tether run`` (or demo,
resume) prints "approval needed now" although the request was opened on a Ray host."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tether.memory import StepClock, Store
from tether.runtime.cli import app
from tether.runtime.inbox import Inbox

pytestmark = pytest.mark.ray


def test_the_driver_shows_each_high_tier_request_once(ray_session: None, sqlite_url: str) -> None:
    # The refund desk runs on a Ray host; its refund of 120.00 needs a person now.
    result = CliRunner().invoke(app, ["demo", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    with Store(sqlite_url) as store:
        [item] = Inbox(store, StepClock()).items("pending")
    assert item.request.tier == "high"
    episode = re.search(r"^episode: (\S+)$", result.output, re.M)
    assert episode is not None, result.output
    # The driver says so, naming the request, the agent, the tool and the action.
    notice = (
        f"approval needed now: {item.id} refunds issue_refund #3 in episode "
        f"{episode.group(1)}: amount 120.00 is above 100"
    )
    assert result.output.count("approval needed now") == 1, result.output
    assert notice in result.output, result.output
    # Resumed before anyone decided, the episode waits again on the same request: it
    # was announced already, so the driver does not announce it again.
    again = CliRunner().invoke(app, ["resume", episode.group(1), "--db", sqlite_url])
    assert again.exit_code == 0, again.output
    assert "refund_desk: waiting" in again.output
    assert "approval needed now" not in again.output, again.output
