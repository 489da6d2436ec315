"""Ids a person types: as git does, a unique prefix of an episode's or a request's id is
enough; an ambiguous one lists what it matches."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo

# Three episodes whose ids share their first four hex digits, and no more.
STARTS = {"a": 0x3F2A1B << 104, "b": 0x3F2A9C << 104, "c": 0x3F2A77 << 104}


@pytest.fixture
def desk(sqlite_url: str) -> Iterator[dict[str, uuid.UUID]]:
    """Three refund desks, each waiting for a person to approve its refund: the episode's
    id starts as in ``STARTS``, its request's id is the next one. They run in 2100, so the
    requests' deadlines have not passed when the CLI decides them now."""
    with Store(sqlite_url) as store:
        found = {}
        for name, start in STARTS.items():
            clock, ids = StepClock(datetime(2100, 1, 1, tzinfo=UTC)), SequentialIds(start)
            host = Host(demo.topology, store, clock, ids)
            supervisor = RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)
            found[name] = supervisor.start(demo.task, demo.context).episode_id
        yield found


def cli(sqlite_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--db", sqlite_url])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_a_unique_prefix_names_an_episode(sqlite_url: str, desk: dict[str, uuid.UUID]) -> None:
    # Six characters are enough to replay the first desk, with or without the dash.
    for given in ("3f2a1b", "3F2A1B00", "3f2a1b00-0000"):
        code, shown = cli(sqlite_url, "replay", given)
        assert code == 0, shown
        assert f"episode {desk['a']}" in shown
    # Every command that takes an episode takes its prefix: the evidence bundle ...
    code, bundle = cli(sqlite_url, "audit", "export", "3f2a9c")
    assert code == 0, bundle
    assert json.loads(bundle)["payloadType"]
    # ... and a diff of two of them.
    code, shown = cli(sqlite_url, "diff", "3f2a1b", "3f2a77")
    assert code == 0, shown
    assert "triage: the same" in shown


def test_an_ambiguous_prefix_lists_what_it_matches(
    sqlite_url: str, desk: dict[str, uuid.UUID]
) -> None:
    # "3f2a" starts all three: nothing is replayed, and the message shows how each starts.
    code, shown = cli(sqlite_url, "replay", "3f2a")
    assert code == 1
    assert (
        "ambiguous: '3f2a' matches 3 episodes (3f2a1b.., 3f2a77.., 3f2a9c..); "
        "give more of the id" in shown
    )
    # Resume and fork refuse it before any fleet starts.
    for command in (["resume", "3f2a"], ["fork", "3f2a", "--at", "1"]):
        code, shown = cli(sqlite_url, *command)
        assert code == 1 and "ambiguous: '3f2a' matches 3 episodes" in shown, shown
    # Too short a prefix could name anything tomorrow: four characters at least.
    code, shown = cli(sqlite_url, "replay", "3f2")
    assert code == 1
    assert "'3f2' is too short for an episode id: give at least 4 of its characters" in shown
    # A prefix nothing starts with is an unknown episode, as before.
    code, shown = cli(sqlite_url, "replay", "beef")
    assert code == 1 and "no episode 'beef'; `tether episodes` lists them" in shown


def test_a_unique_prefix_names_an_approval_request(
    sqlite_url: str, desk: dict[str, uuid.UUID]
) -> None:
    # Each desk's request has the id after its episode's: its prefix names the request.
    code, shown = cli(sqlite_url, "inbox", "show", "3f2a9c")
    assert code == 0, shown
    assert str(desk["b"]) in shown
    code, shown = cli(sqlite_url, "inbox", "approve", "3f2a1b", "--as", "alice", "--reason", "ok")
    assert code == 0, shown
    assert f"granted: {uuid.UUID(int=STARTS['a'] + 1)}" in shown
    with Store(sqlite_url) as store:
        pending = {i.request.episode_id for i in Inbox(store, StepClock()).items("pending")}
    assert pending == {desk["b"], desk["c"]}
    # A request prefix shared by all three is ambiguous, and decides nothing.
    code, shown = cli(sqlite_url, "inbox", "deny", "3f2a", "--as", "alice")
    assert code == 1
    assert "ambiguous: '3f2a' matches 3 approval requests" in shown
