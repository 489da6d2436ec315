"""End to end on Ray: the refund desk through the CLI, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.memory import Store, load_timeline
from tether.memory.episodes import episode_events
from tether.memory.events import BoundariesChecked, EffectApplied
from tether.runtime.cli import app
from tether.runtime.launch import parse_episode_id

pytestmark = pytest.mark.ray

STAGES = ("boundaries", "budget", "governance", "approval", "execution", "verification", "record")


def tether(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_refund_desk_stops_the_injection_and_waits_for_a_person(
    ray_session: None, store_url: str
) -> None:
    # The demo runs unattended and stops where a person must decide.
    out = tether("demo", "--db", store_url)
    episode = re.search(r"^episode: (\S+)$", out, re.M)
    assert episode, out
    episode_id = parse_episode_id(episode.group(1))
    assert "refund_desk: waiting" in out
    assert "2 allowed, 1 denied, 1 waiting for approval" in out

    # The injected refund of 5000 to mallory was stopped by the rails, and that is on record.
    with Store(store_url) as store:
        timeline = load_timeline(store, episode_id)
        events = episode_events(store, episode_id)
    refunds = {a.name: a for a in timeline.agents}["refunds"]
    injected = refunds.actions[1]
    assert injected.arguments["recipient"] == "mallory@evil.test"
    assert injected.outcome == "denied"
    rules = {v["rule"] for _, e in events if isinstance(e, BoundariesChecked) for v in e.violations}
    assert {"cap:issue_refund.amount", "allow:issue_refund.recipient"} <= rules

    # The summary prints the exact command that approves the waiting refund.
    approve = re.search(r"approve: (\S*tether inbox approve \S+.*)$", out, re.M)
    assert approve, out
    pending = json.loads(tether("inbox", "list", "--json", "--db", store_url))
    assert [p["tool"] for p in pending] == ["issue_refund"]
    assert pending[0]["arguments"]["amount"] == "120.00"
    tether(*shlex.split(approve.group(1))[1:], "--as", "alice", "--reason", "order checked")

    # Resume finishes the work: the refund runs once, Ada is told, mallory gets nothing.
    out = tether("resume", str(episode_id), "--db", store_url)
    assert "refund_desk: completed" in out
    assert "5 allowed, 2 denied, 0 waiting" in out
    with Store(store_url) as store:
        timeline = load_timeline(store, episode_id)
    effects = timeline.effects
    assert [e.tool for e in effects] == ["issue_refund", "send_email", "record_fact"]
    assert len({e.key for e in effects}) == len(effects)
    assert all("mallory" not in json.dumps(e.arguments) for e in effects)

    # Replay shows every stage's decision for the approved refund.
    tree = tether("replay", str(episode_id), "--db", store_url)
    refund_lines = tree.split("#3 issue_refund", 1)[1].split("#4", 1)[0]
    for stage in STAGES:
        assert stage in refund_lines
    assert "granted by alice: order checked" in refund_lines

    # --json is one array of every event, in recorded order.
    events = json.loads(tether("replay", str(episode_id), "--json", "--db", store_url))
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    types = {e["type"] for e in events}
    assert {
        "EpisodeStarted",
        "ActionProposed",
        "BoundariesChecked",
        "BudgetReserved",
        "GovernanceDecided",
        "ApprovalAwaited",
        "ApprovalSettled",
        "ActionExecuted",
        "ActionVerified",
        "BudgetSettled",
        "ActionRecorded",
        "EpisodeCompleted",
    } <= types

    # Resuming a finished episode changes nothing: no effect happens twice.
    tether("resume", str(episode_id), "--db", store_url)
    with Store(store_url) as store:
        assert len(store.of_type(EffectApplied)) == 3


def test_a_topology_file_runs_on_ray(ray_session: None, sqlite_url: str) -> None:
    # The example file is loaded again inside the Ray worker, from its path.
    example = Path(__file__).resolve().parent.parent / "examples" / "expenses.py"
    out = tether("run", str(example), "--db", sqlite_url)
    assert "expenses: completed — Reimbursed 180.00 to emp:42" in out
    assert "3 allowed, 0 denied, 0 waiting" in out
