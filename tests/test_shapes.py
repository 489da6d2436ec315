"""Shapes: pipeline, swarm and critic loop are builders over the supervisor tree; they
run like any topology, nest under supervisors, and report mistakes with their places."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import ScriptedModel, call, say
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import BoundariesChecked, TaskAssigned, agent_stream_id
from tether.runtime.cli import app
from tether.topologies import Agent, Role, Supervisor, Topology, critic_loop, pipeline, swarm

from .test_restarts import start


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def agent(name: str, *script: Any) -> Agent:
    return Agent(name, Role(name), ScriptedModel(list(script)))


def hands(store: Store, report: Any, names: list[str]) -> list[tuple[str, str]]:
    """(agent, who gave it work), in the order work was given."""
    streams = {agent_stream_id(report.episode_id, n): n for n in names}
    return [(e.agent, e.by) for _, e in store.read_streams(streams) if isinstance(e, TaskAssigned)]


def test_a_pipeline_hands_the_work_on_in_order(store: Store) -> None:
    shape = pipeline(
        "intake_to_reply",
        agent("read", call("handoff", to="decide", reason="read")),
        agent("decide", call("handoff", to="reply", reason="decided")),
        agent("reply", say("replied")),
    )
    report = start(store, Topology("desk", shape))
    assert report.status == "completed" and report.output == "replied"
    assert hands(store, report, ["read", "decide", "reply"]) == [
        ("read", "operator"),
        ("decide", "read"),
        ("reply", "decide"),
    ]
    read = shape.children[0]
    assert isinstance(read, Agent) and read.handoffs == ("decide",)
    assert "hand off to decide" in read.instructions


def test_a_pipeline_stage_cannot_skip_ahead(store: Store) -> None:
    shape = pipeline(
        "p",
        agent("a", call("handoff", to="c", reason="skip"), say("gave up")),
        agent("b", say("-")),
        agent("c", say("-")),
    )
    report = start(store, Topology("desk", shape))
    assert report.output == "gave up"
    [checked] = [
        e
        for e in store.read(agent_stream_id(report.episode_id, "a"))
        if isinstance(e, BoundariesChecked)
    ]
    assert checked.decision == "deny" and "'c' is not allowed" in checked.reason


def test_a_swarm_passes_control_with_a_reason(store: Store) -> None:
    shape = swarm(
        "help",
        agent("triage", call("handoff", to="billing", reason="a refund question")),
        agent("billing", call("handoff", to="tech", reason="it is a login bug")),
        agent("tech", say("reset the password")),
    )
    report = start(store, Topology("desk", shape))
    assert report.output == "reset the password"
    billing = shape.children[1]
    assert isinstance(billing, Agent) and billing.handoffs == ("triage", "tech")


def test_a_critic_loop_stops_sending_work_back_after_its_rounds(store: Store) -> None:
    # A scripted model answers by turn within each task: the editor's first turn sends
    # every draft back, and only the rail stops the second.
    worker = agent("writer", call("handoff", to="editor", reason="a draft"))
    editor = agent(
        "editor",
        call("handoff", to="writer", reason="tighten it"),
        say("approved with notes"),
    )
    report = start(store, Topology("docs", critic_loop("review", worker, editor, rounds=2)))
    assert report.status == "completed" and report.output == "approved with notes"
    denied = [
        e
        for e in store.read(agent_stream_id(report.episode_id, "editor"))
        if isinstance(e, BoundariesChecked) and e.decision == "deny"
    ]
    assert len(denied) == 1 and "rate:handoff" in str(denied[0].violations)


def test_shapes_nest_under_a_supervisor_and_report_their_mistakes() -> None:
    inner = critic_loop("review", agent("w", say("-")), agent("r", say("-")))
    topology = Topology("t", Supervisor("root", (agent("lead", say("-")), inner)))
    assert list(topology.agents()) == ["lead", "w", "r"]
    assert topology.chain("w")[0].name == "review"
    last = pipeline("p", agent("a", say("-")), inner)  # a shape may end a pipeline
    first = last.children[0]
    assert isinstance(first, Agent) and first.handoffs == ("w",)
    with pytest.raises(TopologyError) as caught:
        pipeline("p", inner, agent("a", say("-")))
    assert list(caught.value.problems) == [
        "p.stages[0]: must be an Agent, got Supervisor; only a pipeline's last stage may be a shape"
    ]
    with pytest.raises(TopologyError, match=r"review\.rounds: must be a positive integer"):
        critic_loop("review", agent("w", say("-")), agent("r", say("-")), rounds=0)


def test_tether_validate_lists_every_problem_or_says_valid(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(
        "from tether.agents import ScriptedModel, say\n"
        "from tether.topologies import Agent, Role, Topology, pipeline\n"
        "a = Agent('a', Role('a'), ScriptedModel([say('-')]))\n"
        "b = Agent('b', Role('b'), ScriptedModel([say('-')]))\n"
        "topology = Topology('two', pipeline('p', a, b))\n"
    )
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "two is valid: 2 agents under 1 supervisor; entry a" in result.output
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from tether.agents import ScriptedModel, say\n"
        "from tether.topologies import Agent, Budget, Role, Supervisor, Topology\n"
        "a = Agent('a', Role('a'), ScriptedModel([say('-')]), handoffs=('ghost',))\n"
        "b = Agent('b', Role('b'), None, budget=Budget(steps=9))\n"
        "topology = Topology('two', Supervisor('root', (a, b), budget=Budget(steps=5)))\n"
    )
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    for words in (
        "two.root.children[1].model: missing model",
        "two.root.children[1].budget.steps: 9 exceeds the supervisor's 5",
        "two.root.children[0].handoffs[0]: unknown agent 'ghost'",
    ):
        assert words in result.output
