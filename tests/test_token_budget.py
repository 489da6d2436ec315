"""Model-token budgets: each call reserves its context's estimate first, what the model
reports is counted from the recorded turn, and no restart or resume resets it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tether.agents import ScriptedModel, call, say
from tether.agents.model import ModelTurn, Usage
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import AgentFailed, ModelResponded
from tether.runtime.inbox import Inbox
from tether.topologies import Agent, ApprovalThreshold, Budget, Grant, Role, Supervisor, Topology

from .test_gate import ALL_TOOLS, Run


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def costly(turn: ModelTurn, tokens: int = 50) -> ModelTurn:
    return dataclasses.replace(turn, usage=Usage(input_tokens=tokens - 10, output_tokens=10))


def clerk(name: str, script: list[Any], tokens: int | None, **kw: Any) -> Agent:
    grants = (
        Grant("noop", tier="low"),
        Grant("pay", tier="low", approval=ApprovalThreshold("amount", Decimal("100"))),
    )
    return Agent(
        name,
        Role(name, grants),
        ScriptedModel(script),
        ALL_TOOLS,
        budget=Budget(tokens=tokens),
        **kw,
    )


def test_an_agent_out_of_tokens_fails_before_the_call(store: Store) -> None:
    script = [costly(call("noop")), costly(call("noop")), say("never asked")]
    topology = Topology("t", Supervisor("root", (clerk("clerk", script, tokens=100),)))
    run = Run(store, topology)
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    assert len([e for e in run.events() if isinstance(e, ModelResponded)]) == 2
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.reason.startswith(
        "budget: token budget of clerk exhausted: 0 of 100 left, the next model call needs about"
    )


def test_the_supervisors_tokens_bind_every_agent_together(store: Store) -> None:
    first = clerk(
        "first",
        [costly(call("noop"), 60), call("handoff", to="second", reason="yours")],
        tokens=100,
        handoffs=("second",),
    )
    second = clerk("second", [costly(call("noop"), 50), say("done")], tokens=100)
    topology = Topology("t", Supervisor("root", (first, second), budget=Budget(tokens=120)))
    run = Run(store, topology)
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    assert "budget: token budget of root exhausted: 10 of 120 left" in run.report.output


def test_a_resume_continues_the_count(store: Store) -> None:
    # 60 tokens spent before the run waits for a person; after the resume only 40 are left.
    script = [costly(call("pay", to="a@x.test", amount="500"), 60), say("paid")]
    topology = Topology("t", Supervisor("root", (clerk("clerk", script, tokens=100),)))
    run = Run(store, topology)
    assert run.report.status == "waiting"
    [item] = Inbox(store, run.clock).items("pending")
    Inbox(store, run.clock).approve(item.id, "alice", "ok")
    run.resume()  # a fresh host, folding the count from the store
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    assert "budget: token budget of clerk exhausted: 40 of 100 left" in run.report.output


def test_a_childs_token_budget_is_carved_from_its_parents() -> None:
    with pytest.raises(TopologyError) as caught:
        Topology(
            "t",
            Supervisor(
                "root",
                (clerk("a", [say("-")], tokens=500), clerk("b", [say("-")], tokens=None)),
                budget=Budget(tokens=100),
            ),
        )
    problems = caught.value.problems
    assert (
        "t.root.children[0].budget.tokens: 500 exceeds the supervisor's 100; a child's budget "
        "is carved from its parent's"
    ) in problems
    assert (
        "t.root.children[1].budget.tokens: unlimited under a supervisor limited to 100; give "
        "the agent a budget of tokens"
    ) in problems
