"""Memory scopes: at the start of each task an agent recalls the org-memory facts its
scopes name (filled from the task), into its context; the recall is recorded, counts as
use, and re-execution feeds it back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ModelRequest, ModelTurn, ScriptedModel, ToolContext, call, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import TopologyError
from tether.memory.events import FactUsed, MemoryRecalled, agent_stream_id
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology


class FactArgs(BaseModel):
    subject: str
    key: str
    statement: str


@tool(idempotent=True, output="system")
def note(args: FactArgs, ctx: ToolContext) -> dict[str, Any]:
    """Record a fact in org memory."""
    ctx.record_fact(args.subject, args.key, args.statement)
    return {"noted": args.key}


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def episode(store: Store, topology: Topology, task: dict[str, Any], first_id: int) -> Any:
    clock, ids = StepClock(), SequentialIds(first_id)
    host = Host(topology, store, clock, ids)
    return RootSupervisor(topology, store, LocalHost(host), clock, ids).start(task)


def saw_the_facts(request: ModelRequest) -> ModelTurn:
    shown = "\n".join(m.content for m in request.messages)
    ok = "release:r42 scorecard: all checks green" in shown
    ok = ok and "freeze:global freeze: no freeze" in shown
    return say("ship it" if ok else "I was not shown the facts")


def test_an_agent_recalls_the_facts_its_scopes_name(store: Store) -> None:
    scout = Agent(
        "scout",
        Role("scout", (Grant("note", tier="low"),)),
        ScriptedModel(
            [
                call("note", subject="release:r42", key="scorecard", statement="all checks green"),
                call("note", subject="freeze:global", key="freeze", statement="no freeze"),
                call("note", subject="release:r41", key="scorecard", statement="red"),
                say("noted"),
            ]
        ),
        (note,),
    )
    episode(store, Topology("scouting", Supervisor("root", (scout,))), {}, first_id=1)
    gate = Agent(
        "gate",
        Role("gate"),
        ScriptedModel([saw_the_facts]),
        memory=("release:{release}", "freeze:global", "customer:{customer}"),
    )
    topology = Topology("release", Supervisor("root", (gate,)))
    report = episode(store, topology, {"release": "r42"}, first_id=100)
    assert report.output == "ship it"
    [recalled] = [
        e
        for e in store.read(agent_stream_id(report.episode_id, "gate"))
        if isinstance(e, MemoryRecalled)
    ]
    # customer:{customer} names a field the task lacks: skipped; r41's facts are not in scope.
    assert recalled.subjects == ["release:r42", "freeze:global"]
    assert [(f["subject"], f["statement"]) for f in recalled.facts] == [
        ("release:r42", "all checks green"),
        ("freeze:global", "no freeze"),
    ]
    used = [e for _, e in store.of_type(FactUsed)]
    assert {u.subject for u in used} == {"release:r42", "freeze:global"}
    assert reexecute(store, report.episode_id, topology).identical


def test_memory_scopes_are_validated() -> None:
    with pytest.raises(TopologyError, match=r"memory: must be a tuple of subjects"):
        Topology(
            "t",
            Supervisor("root", (Agent("a", Role("a"), ScriptedModel([say("-")]), memory=("",)),)),
        )
