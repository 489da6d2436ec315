"""Topologies: mistakes are reported before anything runs, all at once, with paths."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, say, tool
from tether.memory.errors import TopologyError, TopologyLoadError
from tether.topologies import (
    Agent,
    AllowedValues,
    ApprovalThreshold,
    Budget,
    Grant,
    Role,
    SpendCap,
    Supervisor,
    Topology,
    load_file,
    load_module,
)

from .conftest import ONE_AGENT_FILE


class Args(BaseModel):
    to: str


@tool()
def send(args: Args, ctx: ToolContext) -> dict[str, str]:
    """Send."""
    return {}


def agent(name: str = "a", **kw: object) -> Agent:
    base: dict[str, object] = {
        "role": Role(name),
        "model": ScriptedModel([say("hi")]),
        "tools": (send,),
    }
    return Agent(name=name, **{**base, **kw})  # type: ignore[arg-type]


def test_a_valid_topology_names_its_entry() -> None:
    t = Topology("ok", Supervisor("root", (agent("a"), agent("b")), entry="b"))
    assert t.entry == "b"
    assert list(t.agents()) == ["a", "b"]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    # A topology with five mistakes gets one error listing all five.
    with pytest.raises(TopologyError) as caught:
        Topology(
            "desk",
            Supervisor(
                "root",
                budget=Budget(steps=5),
                entry="nobody",
                children=(
                    agent("a", role=Role("a", grants=(Grant("sned"),)), budget=Budget(steps=9)),
                    agent("a", handoffs=("ghost",), budget=Budget(steps=1)),
                    agent(
                        "c",
                        model=None,
                        budget=Budget(steps=1),
                        rails=(AllowedValues(tool="send", field="recipient", values=("x",)),),
                    ),
                ),
            ),
        )
    problems = caught.value.problems
    expected = [
        "desk.root.children[0].budget.steps: 9 exceeds the supervisor's 5",
        "desk.root.children[0].role.grants[0].tool: unknown tool 'sned'",
        "desk.root.children[1].name: duplicate name 'a'; agents and supervisors need unique",
        "desk.root.children[2].model: missing model",
        "desk.root.children[2].rails[0].field: tool 'send' has no argument 'recipient'",
        "desk.root.entry: unknown child 'nobody'",
        "desk.root.children[1].handoffs[0]: unknown agent 'ghost'",
    ]
    for words in expected:
        assert any(words in p for p in problems), (words, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (
            {"role": Role("a", grants=(Grant("send", tier="urgent"),))},  # type: ignore[arg-type]
            "grants[0].tier: 'urgent' is not a tier",
        ),
        (
            {
                "role": Role(
                    "a", grants=(Grant("send", approval=ApprovalThreshold("amount", Decimal(1))),)
                )
            },
            "approval.field: tool 'send' has no argument 'amount'",
        ),
        ({"rails": (SpendCap(tool="send", field="to"),)}, "caps nothing"),
        ({"rails": (AllowedValues(tool="send", field="to"),)}, "allows nothing"),
        ({"max_turns": 0}, "max_turns: must be a positive integer"),
        ({"budget": Budget(steps=-1)}, "budget.steps: must be a non-negative integer"),
        ({"handoffs": ("a",)}, "cannot hand off to itself"),
        # Granting a built-in tool the agent was not given names the field that gives it.
        (
            {"role": Role("a", grants=(Grant("handoff"),))},
            "grants[0].tool: unknown tool 'handoff'; it is built in: give the agent "
            "Agent(handoffs=(...)) naming the agents it may hand off to",
        ),
        (
            {"role": Role("a", grants=(Grant("delegate"),))},
            "unknown tool 'delegate'; it is built in: give the agent Agent(workers=(...))",
        ),
        (
            {"rails": (SpendCap(tool="send_message", field="body", per_call=Decimal(1)),)},
            "unknown tool 'send_message'; it is built in: give the agent Agent(peers=(...))",
        ),
    ],
)
def test_each_kind_of_mistake_names_its_field(kw: dict[str, object], words: str) -> None:
    with pytest.raises(TopologyError, match="topology has 1 problem") as caught:
        Topology("t", Supervisor("root", (agent("a", **kw),)))
    assert words in caught.value.problems[0]


def test_a_supervisor_without_agents_is_refused() -> None:
    with pytest.raises(TopologyError, match="needs at least one child"):
        Topology("t", Supervisor("root", ()))


# --- loading from files ---------------------------------------------------------------


def test_a_topology_file_is_loaded_with_its_task_and_context(tmp_path: Path) -> None:
    f = tmp_path / "fleet.py"
    f.write_text(ONE_AGENT_FILE + "task = {'q': 1}\ncontext = {'who': 'me'}\n")
    loaded = load_file(f)
    assert loaded.topology.name == "one"
    assert (loaded.task, loaded.context) == ({"q": 1}, {"who": "me"})
    assert loaded.source["kind"] == "file" and loaded.source["attr"] == "topology"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x = 1\n", "defines no Topology"),
        ("def broken(:\n", "line 1: SyntaxError"),
        ("import nowhere_to_be_found\n", "ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "line 1: RuntimeError: boom"),
    ],
)
def test_a_bad_topology_file_is_one_clear_error(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "bad.py"
    f.write_text(text)
    with pytest.raises(TopologyLoadError) as caught:
        load_file(f)
    assert words in str(caught.value)
    assert str(f) in str(caught.value)


def test_a_file_with_an_invalid_topology_reports_the_topology_problems(tmp_path: Path) -> None:
    f = tmp_path / "invalid.py"
    f.write_text(
        "from tether.agents import ScriptedModel, say\n"
        "from tether.topologies import Agent, Role, Supervisor, Topology\n"
        "topology = Topology('one', Supervisor('root', (Agent('a', Role('a'), None),)))\n"
    )
    with pytest.raises(TopologyError, match=r"one.root.children\[0\].model: missing model"):
        load_file(f)


def test_missing_files_and_modules_are_named(tmp_path: Path) -> None:
    with pytest.raises(TopologyLoadError, match="no such file"):
        load_file(tmp_path / "absent.py")
    with pytest.raises(TopologyLoadError, match="cannot be imported"):
        load_module("tether.topologies.absent")


def test_the_demo_topology_is_valid_and_loadable() -> None:
    loaded = load_module("tether.topologies.demo")
    assert loaded.topology.entry == "triage"
    assert loaded.context["customer"]["email"] == "ada@example.com"


class Amount(BaseModel):
    to: str
    amount: Decimal


@tool(destructive=True)
def refund(args: Amount, ctx: ToolContext) -> dict[str, str]:
    """Refund."""
    return {}


def test_a_child_can_only_narrow_its_supervisors_grants() -> None:
    bound = Role(
        "desk",
        grants=(
            Grant("refund", tier="high", approval=ApprovalThreshold("amount", Decimal("100"))),
            Grant("send", tier="medium", secrets=("smtp-password",)),
        ),
    )
    narrower = agent(
        "ok",
        tools=(send, refund),
        role=Role(
            "ok",
            grants=(
                Grant("refund", tier="high", approval=ApprovalThreshold("amount", Decimal("50"))),
                Grant("send", tier="high"),
            ),
        ),
    )
    Topology("fine", Supervisor("root", (narrower,), role=bound))
    wider = agent(
        "clerk",
        tools=(send, refund),
        role=Role(
            "clerk",
            grants=(
                Grant("refund", tier="low", approval=ApprovalThreshold("amount", Decimal("500"))),
                Grant("send", secrets=("smtp-password", "db-password")),
            ),
        ),
    )
    outsider = agent("other", tools=(send, refund), role=Role("other", (Grant("page"),)))
    with pytest.raises(TopologyError) as caught:
        Topology("desk", Supervisor("root", (wider, outsider), role=bound))
    problems = caught.value.problems
    assert (
        "desk.root.children[0].role.grants[0]: grant 'refund' of agent 'clerk' widens its "
        "supervisor's role: tier low is looser than the supervisor's high"
    ) in problems
    assert (
        "desk.root.children[0].role.grants[0]: grant 'refund' of agent 'clerk' widens its "
        "supervisor's role: the supervisor asks a person above amount 100; the agent must "
        "ask at that threshold or lower"
    ) in problems
    assert (
        "desk.root.children[0].role.grants[1]: grant 'send' of agent 'clerk' widens its "
        "supervisor's role: secrets ['db-password'] are not granted to the supervisor"
    ) in problems
    assert any(
        p.startswith("desk.root.children[1].role.grants[0]: grant 'page' of agent 'other'")
        and p.endswith("role 'desk', which does not grant 'page'")
        for p in problems
    )
