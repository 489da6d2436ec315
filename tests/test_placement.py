"""Placement: an isolated agent runs on a host actor of its own; the supervisor's budget
still binds across hosts, and a dead isolated host is replaced without touching the
shared one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import (
    ActionExecuted,
    AgentRestarted,
    BudgetReserved,
    EffectApplied,
    agent_stream_id,
)
from tether.runtime.launch import run
from tether.topologies import Agent, Role, Supervisor, Topology
from tether.topologies.loader import load_file

pytestmark = pytest.mark.ray

FLEET = """
import os
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Budget, Grant, Restarts, Role, Supervisor, Topology


class Nothing(BaseModel):
    pass


@tool(idempotent=True)
def work(args: Nothing, ctx: ToolContext) -> dict:
    '''Work; the isolated agent's host dies the first time it works.'''
    flag = Path(ctx.context["flag"])
    if ctx.agent == "heavy" and not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(9)
    return {"pid": os.getpid()}


def agent(name, steps, **kw):
    script = [call("work") for _ in range(steps)]
    script.append(call("handoff", to="heavy", reason="yours") if name == "lead" else say("done"))
    return Agent(
        name,
        Role(name, (Grant("work", tier="low"),)),
        ScriptedModel(script),
        (work,),
        handoffs=("heavy",) if name == "lead" else (),
        budget=Budget(steps=5),
        **kw,
    )


topology = Topology(
    "placed",
    Supervisor(
        "root",
        (agent("lead", 2), agent("heavy", 3, isolated=True)),
        budget=Budget(steps=5),
        restarts=Restarts(backoff_s=0),
    ),
)
task = {"go": True}
"""


def test_an_isolated_agent_has_its_own_host_and_the_budget_binds_across_hosts(
    ray_session: None, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "placed.py"
    path.write_text(FLEET)
    flag = tmp_path / "heavy-died"
    report = run(load_file(path), context={"flag": str(flag)}, db=sqlite_url)
    assert report.status == "completed", report.output
    with Store(sqlite_url) as store:
        lead = store.read(agent_stream_id(report.episode_id, "lead"))
        heavy = store.read(agent_stream_id(report.episode_id, "heavy"))
        effects = [e for _, e in store.of_type(EffectApplied)]
        restarted = [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
    pids = {
        name: {
            e.result["pid"]
            for e in events
            if isinstance(e, ActionExecuted) and e.result and "pid" in e.result
        }
        for name, events in (("lead", lead), ("heavy", heavy))
    }
    # The lead ran on the shared host; the heavy agent on its own, which died once (it
    # wrote its pid before dying) and was replaced by another.
    assert len(pids["lead"]) == 1 and len(pids["heavy"]) == 1
    assert pids["lead"] != pids["heavy"]
    assert int(flag.read_text()) not in pids["lead"] | pids["heavy"]
    assert [(r.agent, r.strategy) for r in restarted] == [("heavy", "host")]
    # The root's five steps bind both hosts: the lead used two and its handoff one, so
    # the heavy agent's third call is denied by the root's budget, folded from the store.
    budget = [e for e in heavy if isinstance(e, BudgetReserved)]
    assert [e.decision for e in budget] == ["reserved", "reserved", "deny"]
    assert "root's budget" in budget[-1].reason
    assert len({e.key for e in effects}) == len(effects)  # the cut-short action ran once


def test_a_node_preference_needs_isolation() -> None:
    from tether.agents import ScriptedModel, say

    with pytest.raises(TopologyError) as caught:
        Topology(
            "t", Supervisor("root", (Agent("a", Role("a"), ScriptedModel([say("-")]), node="gpu"),))
        )
    assert list(caught.value.problems) == [
        "t.root.children[0].node: only an isolated agent is placed on a node; add isolated=True"
    ]
