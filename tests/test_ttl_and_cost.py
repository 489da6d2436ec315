"""Time to live and cost budgets: deadlines from recorded times that waiting for a person
does not move, spend priced from reported usage, both cumulative and both escalated."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import Price, ScriptedModel, ToolCall, Usage, call, calls, say
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import (
    ActionExecuted,
    AgentFailed,
    BudgetGranted,
    BudgetReserved,
    ModelResponded,
)
from tether.runtime.cli import app
from tether.runtime.escalation import Escalations
from tether.runtime.inbox import Inbox
from tether.runtime.reexecute import reexecute
from tether.runtime.status import episode_status
from tether.topologies import (
    Agent,
    ApprovalThreshold,
    Budget,
    Grant,
    Restarts,
    Role,
    Supervisor,
    Topology,
)

from .test_gate import ALL_TOOLS, Run

PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def clerk(script: list[Any], budget: Budget, **kw: Any) -> Agent:
    grants = (
        Grant("noop", tier="low"),
        Grant("pay", tier="low", approval=ApprovalThreshold("amount", Decimal("100"))),
    )
    return Agent(
        "clerk", Role("clerk", grants), ScriptedModel(script), ALL_TOOLS, budget=budget, **kw
    )


def fleet(agent: Agent, budget: Budget | None = None) -> Topology:
    root = Supervisor("root", (agent,), budget=budget or Budget(), restarts=Restarts(backoff_s=0))
    return Topology("t", root)


def busy(n: int) -> list[Any]:
    return [call("noop", n=i) for i in range(n)] + [say("done")]


# --- time to live ---------------------------------------------------------------------


def test_an_agent_past_its_ttl_fails_and_is_escalated(store: Store) -> None:
    # The test clock moves one second per recorded event; an action takes about eight.
    run = Run(store, fleet(clerk(busy(20), Budget(ttl_s=30))))
    assert run.report.status == "waiting"  # escalated: a restart could not find more time
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.reason.startswith("budget: time to live of agent clerk (30 s of active time)")
    executed = len([e for e in run.events() if isinstance(e, ActionExecuted)])
    assert 0 < executed < 20
    # What it did before is kept, and the same history decides the same on re-execution.
    assert reexecute(store, run.episode, run.topology).identical


def test_actions_proposed_past_the_deadline_are_denied_at_the_budget_stage(
    store: Store,
) -> None:
    one_turn = calls(*(ToolCall("noop", {"n": i}) for i in range(10)))
    run = Run(store, fleet(clerk([one_turn, say("done")], Budget(ttl_s=30))))
    decisions = [e.decision for e in run.events() if isinstance(e, BudgetReserved)]
    assert decisions[0] == "reserved" and decisions[-1] == "deny"
    late = [e for e in run.events() if isinstance(e, BudgetReserved) and e.decision == "deny"]
    assert late[0].reason.startswith("time to live of agent clerk (30 s of active time) passed")
    assert run.report.status == "waiting"  # and then the agent failed, before its next turn


def test_the_supervisors_ttl_is_every_agents_deadline(store: Store) -> None:
    run = Run(store, fleet(clerk(busy(20), Budget()), Budget(ttl_s=25)))
    assert run.report.status == "waiting"
    assert "time to live of supervisor root (25 s of active time)" in run.report.output


def test_waiting_for_a_person_does_not_count(store: Store) -> None:
    script = [call("pay", to="a@x.test", amount="500"), call("noop"), say("paid")]
    run = Run(store, fleet(clerk(script, Budget(ttl_s=40))))
    assert run.report.status == "waiting"  # for the approval of the payment
    run.clock._at += timedelta(hours=3)  # a person decides three hours later
    [item] = Inbox(store, run.clock).items("pending")
    Inbox(store, run.clock).approve(item.id, "alice", "ok")
    run.resume()
    assert run.report.status == "completed", run.report.output


def test_a_person_retries_with_more_seconds(store: Store) -> None:
    run = Run(store, fleet(clerk(busy(6), Budget(ttl_s=20))))
    assert run.report.status == "waiting"
    [item] = Escalations(store, run.clock).items()
    Escalations(store, run.clock).decide(item.id, "retry", "alice", "nearly done", seconds=120)
    run.resume()
    assert run.report.status == "completed", run.report.output
    granted = [e for e in store.read(run.episode) if isinstance(e, BudgetGranted)]
    assert [(g.seconds, g.by) for g in granted] == [(120.0, "alice")]
    assert reexecute(store, run.episode, run.topology).identical


# --- cost -----------------------------------------------------------------------------


def priced(turn: Any, input_tokens: int = 1000, output_tokens: int = 500) -> Any:
    return dataclasses.replace(turn, usage=Usage(input_tokens, output_tokens))


def test_each_turn_records_its_cost_and_the_budget_stops_the_spend(store: Store) -> None:
    # Each turn: 1000 * $2/M + 500 * $8/M = $0.006. A call reserves what its prompt alone
    # costs (what it will generate is not known before), so the third turn still starts
    # with $0.001 left and the spend stops one turn past the budget, never more.
    script = [priced(call("noop", n=i)) for i in range(5)] + [say("done")]
    run = Run(store, fleet(clerk(script, Budget(cost=Decimal("0.013")), price=PRICE)))
    turns = [e for e in run.events() if isinstance(e, ModelResponded)]
    assert [t.cost for t in turns] == ["0.006", "0.006", "0.006"]
    assert run.report.status == "waiting"
    assert run.report.output.startswith(
        "budget: cost budget of clerk exhausted: -$0.005000 of $0.013000 left, the next model "
        "call needs about $0.000"
    )


def test_a_resume_continues_the_spend(store: Store) -> None:
    script = [
        priced(call("pay", to="a@x.test", amount="500")),
        priced(call("noop")),
        priced(say("paid")),
    ]
    agent = clerk(script, Budget(cost=Decimal("0.010")), price=PRICE)
    run = Run(store, fleet(agent, Budget(cost=Decimal("0.010"))))
    assert run.report.status == "waiting"  # for the approval, $0.006 spent
    [item] = Inbox(store, run.clock).items("pending")
    Inbox(store, run.clock).approve(item.id, "alice", "ok")
    run.resume()  # a fresh host folds $0.006 from the store: the second turn does not fit
    assert run.report.status == "waiting"
    assert "cost budget of clerk exhausted: -$0.002000 of $0.010000 left" in run.report.output


def test_budget_mistakes_are_named() -> None:
    with pytest.raises(TopologyError) as caught:
        Topology(
            "t",
            Supervisor(
                "root",
                (
                    clerk([say("-")], Budget(cost=Decimal("5"), ttl_s=120)),
                    dataclasses.replace(
                        clerk([say("-")], Budget(cost=0.5, ttl_s=-1)),  # type: ignore[arg-type]
                        name="other",
                    ),
                ),
                budget=Budget(cost=Decimal("2"), ttl_s=60),
            ),
        )
    problems = caught.value.problems
    p = "t.root.children"
    assert (
        f"{p}[0].budget.cost: 5 exceeds the supervisor's 2; a child's budget is carved "
        "from its parent's" in problems
    )
    assert (
        f"{p}[0].budget.ttl_s: 120 exceeds the supervisor's 60; a child's budget is "
        "carved from its parent's" in problems
    )
    assert (
        f"{p}[0].price: its budget limits cost (5 dollars) but it has no price; give "
        "Agent(price=Price(input_per_mtok=..., output_per_mtok=...))"
    ) in problems
    assert any(x.startswith(f"{p}[1].budget.cost: must be dollars as a Decimal") for x in problems)
    assert f"{p}[1].budget.ttl_s: must be a number of seconds above 0, or None; got -1" in problems


def test_the_inbox_grants_seconds_and_dollars_and_names_a_bad_amount(store: Store) -> None:
    run = Run(store, fleet(clerk(busy(6), Budget(ttl_s=20))))
    [item] = Escalations(store, run.clock).items()
    retry = ["inbox", "retry", str(item.id), "--db", store.url, "--as", "alice"]
    bad = CliRunner().invoke(app, [*retry, "--cost", "lots"])
    assert bad.exit_code == 1
    assert "--cost: 'lots' is not an amount of dollars; give e.g. 2.50" in bad.output
    good = CliRunner().invoke(app, [*retry, "--seconds", "90", "--cost", "0.25"])
    assert good.exit_code == 0, good.output
    decided = Escalations(store, run.clock).get(item.id).decision
    assert decided is not None and (decided.seconds, decided.cost) == (90.0, "0.25")


def test_status_shows_spend_and_time_left_and_a_wait_does_not_use_it(store: Store) -> None:
    script = [priced(call("pay", to="a@x.test", amount="500")), say("paid")]
    agent = clerk(script, Budget(cost=Decimal("0.05"), ttl_s=60), price=PRICE)
    run = Run(store, fleet(agent, Budget(cost=Decimal("0.05"), ttl_s=100)))
    assert run.report.status == "waiting"
    own = store.read(run.episode)
    source = json.dumps(own[0].source, sort_keys=True)
    suspended = own[-1].at
    later = suspended + timedelta(hours=3)
    status = episode_status(store, run.episode, "waiting", {source: run.topology}, now=later)
    active = (suspended - own[0].at).total_seconds()
    assert status.ttl_left_s == 100 - active
    [clerk_status] = status.agents
    assert clerk_status.ttl_left_s is not None and 0 < clerk_status.ttl_left_s < 60
    data = status.as_dict()
    assert data["cost"] == {"used": "0.006", "limit": "0.05", "reserved": "0", "left": "0.044"}
    shown = CliRunner().invoke(app, ["status", "--db", store.url])
    assert shown.exit_code == 0, shown.output
