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


CRASHING_FLEET = """
import os
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Restarts, Role, Supervisor, Topology


class Entry(BaseModel):
    line: str


@tool(idempotent=True)
def write_ledger(args: Entry, ctx: ToolContext) -> dict:
    '''Append a line to the ledger file, once per idempotency key.'''
    ledger = Path(ctx.context["ledger"])
    done = ledger.read_text().splitlines() if ledger.exists() else []
    if ctx.idempotency_key not in done:
        with ledger.open("a") as f:
            f.write(ctx.idempotency_key + "\\n")
    marker = Path(ctx.context["marker"])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(9)  # the host actor's process dies in the middle of the action
    return {"written": args.line}


clerk = Agent(
    "clerk",
    Role("clerk", (Grant("write_ledger", tier="low"),)),
    ScriptedModel([call("write_ledger", line="paid INV-9"), say("booked")]),
    (write_ledger,),
)
topology = Topology("books", Supervisor("root", (clerk,), restarts=Restarts(backoff_s=0)))
"""


def test_a_host_actor_killed_mid_action_is_replaced_and_the_work_completes(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    from tether.memory.events import AgentRestarted
    from tether.runtime.launch import run
    from tether.topologies import load_file

    fleet = tmp_path / "books.py"
    fleet.write_text(CRASHING_FLEET)
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "marker"
    report = run(
        load_file(fleet),
        {"book": "INV-9"},
        context={"ledger": str(ledger), "marker": str(marker)},
        db=sqlite_url,
    )
    assert (report.status, report.output) == ("completed", "booked")
    with Store(sqlite_url) as store:
        own = store.read(report.episode_id)
        [restarted] = [e for e in own if isinstance(e, AgentRestarted)]
        assert restarted.strategy == "host" and "died while running 'clerk'" in restarted.reason
        # The action cut short ran again under its idempotency key: one effect, one line.
        [effect] = store.of_type(EffectApplied)
    assert ledger.read_text().splitlines() == [effect[1].key]


SLOW_FLEET = """
import time
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say
from tether.agents import tool
from tether.topologies import Agent, Grant, Role, Supervisor, Topology


class Entry(BaseModel):
    line: str


@tool(idempotent=True)
def write_ledger(args: Entry, ctx: ToolContext) -> dict:
    '''Append a line to the ledger file, once per idempotency key; slowly, the first time.'''
    ledger = Path(ctx.context["ledger"])
    done = ledger.read_text().splitlines() if ledger.exists() else []
    if ctx.idempotency_key not in done:
        with ledger.open("a") as f:
            f.write(ctx.idempotency_key + "\\n")
    started = Path(ctx.context["started"])
    if not started.exists():
        started.write_text("the first run is under way")
        time.sleep(120)  # the driver is killed meanwhile
    return {"written": args.line}


clerk = Agent(
    "clerk",
    Role("clerk", (Grant("write_ledger", tier="low"),)),
    ScriptedModel([call("write_ledger", line="paid INV-9"), say("booked")]),
    (write_ledger,),
)
topology = Topology("books", Supervisor("root", (clerk,)))
"""


def test_resume_after_the_driver_is_killed_loses_nothing_and_repeats_nothing(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from tether.memory import list_episodes
    from tether.memory.events import agent_stream_id

    address = ray.get_runtime_context().gcs_address
    fleet = tmp_path / "slow.py"
    fleet.write_text(SLOW_FLEET)
    ledger, started = tmp_path / "ledger.txt", tmp_path / "started"
    context = json.dumps({"ledger": str(ledger), "started": str(started)})
    fleet.write_text(SLOW_FLEET + f"\ncontext = {context}\ntask = {{'book': 'INV-9'}}\n")
    driver = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tether"),
            "run",
            str(fleet),
            "--db",
            sqlite_url,
            "--address",
            address,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 90
        while not started.exists():
            assert driver.poll() is None, "the driver ended before the action began"
            assert time.monotonic() < deadline, "the action never began"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # kill -9, in the middle of the action
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    with Store(sqlite_url) as store:
        [summary] = list_episodes(store)
    out = tether("resume", str(summary.episode_id), "--db", sqlite_url, "--address", address)
    assert "completed" in out
    with Store(sqlite_url) as store:
        stream = store.read(agent_stream_id(summary.episode_id, "clerk"))
        versions = [e.originator_version for e in stream]
        assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
        [effect] = store.of_type(EffectApplied)
    assert ledger.read_text().splitlines() == [effect[1].key]  # the effect happened once
