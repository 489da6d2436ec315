"""A stuck agent fails, with the reason recorded: the same call over and over, or no
progress recorded for too many actions. What happens next is its supervisor's call."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tether.agents import call, say
from tether.memory import Store, load_timeline
from tether.memory.errors import TopologyError
from tether.memory.events import AgentFailed
from tether.runtime.host import Host
from tether.topologies import Grant, Stuck, Topology

from .test_gate import Run, fleet

LOW = (Grant("pay", tier="low"), Grant("noop", tier="low"))


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def watched(script: list[Any], stuck: Stuck) -> Topology:
    topology = fleet(script, grants=LOW)
    # Not restarted: these stories end at the first time the agent is stuck.
    clerk = dataclasses.replace(topology.agents()["clerk"], stuck=stuck, restart="temporary")
    return dataclasses.replace(topology, root=dataclasses.replace(topology.root, children=(clerk,)))


def test_the_same_call_over_and_over_is_stuck(store: Store) -> None:
    run = Run(store, watched([call("noop")] * 6 + [say("done")], Stuck()))  # repeats=5
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    timeline = load_timeline(store, run.episode)
    assert [a.outcome for a in timeline.agents[0].actions] == ["executed"] * 4
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.reason == "stuck: noop called with the same arguments 5 times in a row"


def test_calls_that_differ_are_not_stuck(store: Store) -> None:
    script = [call("pay", to="a@x.test", amount=str(n)) for n in range(1, 7)] + [say("paid")]
    run = Run(store, watched(script, Stuck(repeats=2)))
    assert run.report.status == "completed"


def test_no_progress_for_too_many_actions_is_stuck(store: Store) -> None:
    script = [
        call("pay", to="a@x.test", amount="1"),
        call("pay", to="a@x.test", amount="2"),
        call("record_progress", note="two paid", result={"paid": 2}),
        call("pay", to="a@x.test", amount="3"),
        call("pay", to="a@x.test", amount="4"),
        call("pay", to="a@x.test", amount="5"),
        say("never"),
    ]
    run = Run(store, watched(script, Stuck(no_progress_steps=2)))
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.reason == "stuck: no progress recorded in 2 actions (record_progress)"
    tools = [a.tool for a in load_timeline(store, run.episode).agents[0].actions]
    assert tools == ["pay", "pay", "record_progress", "pay", "pay"]
    # The best result so far is folded from the stream, for whoever picks this up.
    rebuilt = Host(run.topology, store, run.clock, run.ids).agent(run.episode, "clerk")
    assert rebuilt.loop.state.best == {"paid": 2}


def test_a_stuck_bound_must_make_sense() -> None:
    with pytest.raises(TopologyError) as caught:
        watched([say("-")], Stuck(repeats=1, no_progress_steps=0))
    assert "t.root.children[0].stuck.repeats: must be an integer of at least 2 or None" in (
        str(caught.value)
    )
    assert "t.root.children[0].stuck.no_progress_steps: must be an integer of at least 1" in (
        str(caught.value)
    )
