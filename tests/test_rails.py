"""Rails on arguments and calls: domains, paths, forbidden values, rate limits, read-only
mode, and a spend cap the whole fleet shares."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    AllowedDomains,
    AllowedPaths,
    Budget,
    Forbidden,
    Grant,
    RateLimit,
    ReadOnly,
    Role,
    SpendCap,
    Supervisor,
    Topology,
)

from .test_gate import noop, pay


class Write(BaseModel):
    path: str
    content: str


@tool(idempotent=True)
def write_file(args: Write, ctx: ToolContext) -> dict[str, Any]:
    """Write a file (pretend)."""
    return {"path": args.path, "bytes": len(args.content)}


class Query(BaseModel):
    sql: str
    user: str = "app"


@tool(read_only=True)
def query(args: Query, ctx: ToolContext) -> dict[str, Any]:
    """Run a query (pretend)."""
    return {"rows": 0}


TOOLS = (pay, noop, write_file, query)
GRANTS = tuple(Grant(t.name, tier="low") for t in TOOLS)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


_episodes = itertools.count(1)


def outcomes(store: Store, script: list[Any], rails: tuple[Any, ...]) -> list[tuple[str, str]]:
    agent = Agent("a", Role("a", GRANTS), ScriptedModel([*script, say("done")]), TOOLS, rails=rails)
    topology = Topology("t", Supervisor("root", (agent,)))
    clock, ids = StepClock(), SequentialIds(1000 * next(_episodes))
    report = RootSupervisor(
        topology, store, LocalHost(Host(topology, store, clock, ids)), clock, ids
    ).start({}, {})
    timeline = load_timeline(store, report.episode_id)
    return [(act.outcome, act.reason) for act in timeline.agents[0].actions]


def test_an_address_or_url_must_be_in_an_allowed_domain(store: Store) -> None:
    got = outcomes(
        store,
        [
            call("pay", to="a@example.com", amount="1"),
            call("pay", to="b@mail.example.com", amount="1"),
            call("pay", to="c@example.com.evil.test", amount="1"),
        ],
        (AllowedDomains("pay", "to", ("example.com",)),),
    )
    assert [o for o, _ in got] == ["executed", "executed", "denied"]
    assert "outside the allowed domains ['example.com'] (rule domain:pay.to)" in got[2][1]


def test_a_path_must_stay_inside_the_allowed_directories(store: Store) -> None:
    got = outcomes(
        store,
        [
            call("write_file", path="/srv/reports/q1.txt", content="x"),
            call("write_file", path="/srv/reports/../secrets/key", content="x"),
            call("write_file", path="/srv/reports-old/q1.txt", content="x"),
        ],
        (AllowedPaths("write_file", "path", ("/srv/reports",)),),
    )
    assert [o for o, _ in got] == ["executed", "denied", "denied"]
    assert "rule path:write_file.path" in got[1][1]


def test_forbidden_values_and_patterns_are_refused(store: Store) -> None:
    got = outcomes(
        store,
        [
            call("query", sql="select 1"),
            call("query", sql="x; DROP  TABLE users"),
            call("query", sql="select 1", user="ROOT"),
        ],
        (
            Forbidden("query", "sql", patterns=(r"(?i)drop\s+table",)),
            Forbidden("query", "user", values=("root",)),
        ),
    )
    assert [o for o, _ in got] == ["executed", "denied", "denied"]
    assert "rule forbid:query.sql" in got[1][1] and "rule forbid:query.user" in got[2][1]


def test_a_rate_limit_counts_executed_calls_in_its_window(store: Store) -> None:
    # The test clock moves a second per read: three calls land within 60 s.
    got = outcomes(store, [call("noop"), call("noop"), call("noop")], (RateLimit("noop", 2, 60),))
    assert [o for o, _ in got] == ["executed", "executed", "denied"]
    assert "noop ran 2 times in the last 60 s; the limit is 2 (rule rate:noop)" in got[2][1]
    got = outcomes(store, [call("noop"), call("noop"), call("noop")], (RateLimit("noop", 2, 1),))
    assert [o for o, _ in got] == ["executed", "executed", "executed"]


def test_a_read_only_agent_reads_and_changes_nothing(store: Store) -> None:
    got = outcomes(
        store,
        [call("query", sql="select 1"), call("pay", to="a@example.com", amount="1")],
        (ReadOnly("*"),),
    )
    assert [o for o, _ in got] == ["executed", "denied"]
    assert "the agent is read-only for '*', and pay changes things" in got[1][1]


def test_a_fleet_cap_binds_every_agent_together(store: Store) -> None:
    cap = SpendCap("pay", "amount", per_fleet=Decimal("100"))

    def agent(name: str, script: list[Any], handoffs: tuple[str, ...] = ()) -> Agent:
        return Agent(
            name,
            Role(name, (Grant("pay", tier="low"),)),
            ScriptedModel(script),
            (pay,),
            rails=(cap,),
            handoffs=handoffs,
            budget=Budget(steps=5),
        )

    first = agent(
        "first",
        [call("pay", to="a@example.com", amount="60"), call("handoff", to="second", reason="r")],
        ("second",),
    )
    second = agent(
        "second",
        [
            call("pay", to="a@example.com", amount="60"),
            call("pay", to="a@example.com", amount="40"),
            say("done"),
        ],
    )
    topology = Topology("t", Supervisor("root", (first, second), budget=Budget(steps=10)))
    clock, ids = StepClock(), SequentialIds()
    report = RootSupervisor(
        topology, store, LocalHost(Host(topology, store, clock, ids)), clock, ids
    ).start({}, {})
    agents = {a.name: a for a in load_timeline(store, report.episode_id).agents}
    assert [a.outcome for a in agents["second"].actions] == ["denied", "executed"]
    assert "would bring the fleet's total to 120, over the cap 100 every agent shares" in (
        agents["second"].actions[0].reason
    )
