"""Deterministic re-execution: the recorded inputs fed back, zero model or tool calls."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventsourcing.utils import get_topic
from pydantic import BaseModel
from typer.testing import CliRunner

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.episodes import episode_events
from tether.memory.events import ActionVerified
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    Grant,
    Provenance,
    Role,
    SpendCap,
    Supervisor,
    Topology,
    demo,
    load_file,
)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def finished_demo(store: Store) -> RootSupervisor:
    clock, ids = StepClock(), SequentialIds()
    host = Host(demo.topology, store, clock, ids)
    return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)


def run_and_approve(store: Store) -> uuid.UUID:
    supervisor = finished_demo(store)
    episode = supervisor.start(demo.task, demo.context).episode_id
    [item] = Inbox(store, StepClock()).items("pending")
    Inbox(store, StepClock()).approve(item.id, "alice", "order checked")
    finished_demo(store).resume(episode)
    return episode


def with_refund_cap(topology: Topology, cap: str) -> Topology:
    refunds = topology.agents()["refunds"]
    rails = tuple(
        dataclasses.replace(r, per_call=Decimal(cap), per_episode=None)
        if isinstance(r, SpendCap)
        else r
        for r in refunds.rails
        if not (getattr(r, "field", "") == "recipient" or isinstance(r, Provenance))
    )
    changed = dataclasses.replace(refunds, rails=rails)
    children = tuple(changed if a.name == "refunds" else a for a in topology.root.children)
    return dataclasses.replace(topology, root=dataclasses.replace(topology.root, children=children))


def test_an_episode_recorded_when_unverified_results_passed_reexecutes_identically(
    store: Store,
) -> None:
    # Tether used to record a tool without a post-condition as passing verification. Such
    # a history is written as it was (here: today's records, put back in the old words and
    # the old version); it reads in today's words, and re-executes identically.
    episode = run_and_approve(store)
    t = store.recorder.table
    today, then = b'"decision":"skipped",', b'"decision":"pass",'
    with store.engine.begin() as conn:
        rows = conn.execute(
            sa.select(t.c.id, t.c.state).where(t.c.topic == get_topic(ActionVerified))
        ).all()
        old = [
            (id_, state.replace(today, then).replace(b',"class_version":2', b""))
            for id_, state in rows
            if today in state
        ]
        for id_, state in old:
            conn.execute(sa.update(t).where(t.c.id == id_).values(state=state))
    assert old and all(b'"no post-condition declared"' in state for _, state in old)
    verified = [e for _, e in episode_events(store, episode) if isinstance(e, ActionVerified)]
    said = {(e.decision, e.reason) for e in verified}
    assert ("skipped", "no post-condition declared") in said
    assert ("pass", "no post-condition declared") not in said
    done = reexecute(store, episode, demo.topology)
    assert done.identical, done.divergence


def test_the_refund_desk_reexecutes_identically_without_calling_anything(store: Store) -> None:
    episode = run_and_approve(store)
    untouchable = ScriptedModel([])  # any real model call would raise ScriptExhausted
    topology = dataclasses.replace(
        demo.topology,
        root=dataclasses.replace(
            demo.topology.root,
            children=tuple(
                dataclasses.replace(a, model=untouchable) for a in demo.topology.root.children
            ),
        ),
    )
    result = reexecute(store, episode, topology)
    assert result.identical, result.divergence
    assert result.fed_back == {"model_turns": 6, "tool_results": 5, "approval_decisions": 1}
    assert untouchable.used == set()


def test_a_changed_rail_is_found_at_the_first_decision_it_changes(store: Store) -> None:
    # The same history, but this build of the refunds agent lets 5000 to anyone through.
    episode = run_and_approve(store)
    result = reexecute(store, episode, with_refund_cap(demo.topology, "10000"))
    assert not result.identical
    d = result.divergence
    assert d is not None
    assert (d.agent, d.event, d.field) == ("refunds", "BoundariesChecked", "decision")
    assert (d.recorded, d.new) == ("deny", "pass")
    assert str(d).startswith("refunds #2, event ") and "recorded 'deny', new 'pass'" in str(d)


def test_a_waiting_episode_reexecutes_to_the_same_wait(store: Store) -> None:
    episode = finished_demo(store).start(demo.task, demo.context).episode_id
    assert reexecute(store, episode, demo.topology).identical


class Nothing(BaseModel):
    pass


noop_calls: list[int] = []


@tool(read_only=True)
def noop(args: Nothing, ctx: ToolContext) -> dict[str, object]:
    """Do nothing, and count it."""
    noop_calls.append(ctx.action)
    return {}


def test_asking_the_model_beyond_the_record_is_a_divergence(store: Store) -> None:
    # Recorded with max_turns=1: one tool call, then the turn limit ended the task.
    def solo(max_turns: int) -> Topology:
        return Topology(
            "t",
            Supervisor(
                "root",
                (
                    Agent(
                        "solo",
                        Role("solo", grants=(Grant("noop"),)),
                        ScriptedModel([call("noop"), say("done")]),
                        tools=(noop,),
                        max_turns=max_turns,
                        restart="temporary",
                    ),
                ),
            ),
        )

    recorded = solo(max_turns=1)
    clock, ids = StepClock(), SequentialIds()
    episode = (
        RootSupervisor(recorded, store, LocalHost(Host(recorded, store, clock, ids)), clock, ids)
        .start({}, {})
        .episode_id
    )
    assert noop_calls == [1]
    result = reexecute(store, episode, recorded)
    assert result.identical
    assert result.fed_back["tool_results"] == 1 and noop_calls == [1]  # the tool never ran
    # New code allows three turns: it asks for a turn the record does not have.
    d = reexecute(store, episode, solo(max_turns=3)).divergence
    assert d is not None
    assert (d.agent, d.event, d.field) == ("solo", "AgentFailed", "reason")
    assert "max_turns (1)" in d.recorded and "no recorded model turn" in d.new


# --- from the command line --------------------------------------------------------------

FLEET = """
from decimal import Decimal
from pydantic import BaseModel
from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Role, SpendCap, Supervisor, Topology

class Pay(BaseModel):
    to: str
    amount: Decimal

@tool(destructive=True)
def pay(args: Pay, ctx: ToolContext) -> dict[str, str]:
    '''Pay.'''
    return {"status": "paid"}

topology = Topology("payables", Supervisor("root", (Agent(
    "clerk", Role("clerk", grants=(Grant("pay", tier="low"),)),
    ScriptedModel([call("pay", to="acme", amount="700"), say("done")]), tools=(pay,),
    rails=(SpendCap(tool="pay", field="amount", per_call=Decimal("CAP")),)),)))
"""


def test_replay_reexecute_reports_identical_then_the_divergence(
    tmp_path: Path, sqlite_url: str
) -> None:
    fleet = tmp_path / "payables.py"
    fleet.write_text(FLEET.replace("CAP", "500"))  # 700 is over the cap: denied
    loaded = load_file(fleet)
    clock, ids = StepClock(), SequentialIds()
    with Store(sqlite_url) as store:
        episode = (
            RootSupervisor(
                loaded.topology,
                store,
                LocalHost(Host(loaded.topology, store, clock, ids)),
                clock,
                ids,
            )
            .start({}, {}, loaded.source)
            .episode_id
        )
    result = CliRunner().invoke(app, ["replay", str(episode), "--reexecute", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("identical: ")
    assert "no model or tool was called" in result.output
    # Someone raises the cap in the file: on the same history, the rail now decides otherwise.
    fleet.write_text(FLEET.replace("CAP", "1000"))
    result = CliRunner().invoke(app, ["replay", str(episode), "--reexecute", "--db", sqlite_url])
    assert result.exit_code == 1
    assert (
        "diverged at clerk #1, event 4 (BoundariesChecked.decision): recorded 'deny', new 'pass'"
        in result.output
    )


def test_reexecuting_an_episode_started_from_python_code_says_how(sqlite_url: str) -> None:
    with Store(sqlite_url) as store:
        episode = finished_demo(store).start(demo.task, demo.context).episode_id
    result = CliRunner().invoke(app, ["replay", str(episode), "--reexecute", "--db", sqlite_url])
    assert result.exit_code == 1
    assert "started from Python code" in result.output
