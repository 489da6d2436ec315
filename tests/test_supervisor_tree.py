"""Nested supervisors: a supervisor past its intensity gives up to its parent, which
restarts its work within its own intensity; the root asks a person. Budgets carve down
the tree and bind every agent under each supervisor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tether.agents import ScriptedModel, call, say
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import AgentRestarted, BudgetReserved, EpisodeEscalated, agent_stream_id
from tether.runtime.reexecute import reexecute
from tether.topologies import Budget, Restarts, Supervisor, Topology

from .test_restarts import FailsFirst, agent, start

NO_WAIT = Restarts(max_restarts=1, backoff_s=0)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def tree(failures: int, root: Restarts = NO_WAIT) -> Topology:
    intake = agent(
        "intake",
        ScriptedModel([call("handoff", to="worker", reason="yours")]),
        handoffs=("worker",),
    )
    team = Supervisor("team", (agent("worker", FailsFirst(failures)),), restarts=NO_WAIT)
    return Topology("t", Supervisor("root", (intake, team), restarts=root))


def restarts(store: Store, report: Any) -> list[tuple[str, str, str, int]]:
    return [
        (e.supervisor, e.failed, e.agent, e.restart)
        for e in store.read(report.episode_id)
        if isinstance(e, AgentRestarted)
    ]


def test_a_nested_supervisor_restarts_its_agent_first(store: Store) -> None:
    report = start(store, tree(failures=1))
    assert report.status == "completed"
    assert restarts(store, report) == [("team", "worker", "worker", 1)]


def test_past_its_intensity_a_supervisor_gives_up_to_its_parent(store: Store) -> None:
    # team restarts the worker once; the second failure is past team's intensity, so root
    # restarts team's work (the worker's first task, given again), and team counts afresh.
    report = start(store, tree(failures=3, root=Restarts(max_restarts=2, backoff_s=0)))
    assert report.status == "completed"
    assert restarts(store, report) == [
        ("team", "worker", "worker", 1),
        ("root", "team", "worker", 1),
        ("team", "worker", "worker", 1),
    ]
    assert reexecute(store, report.episode_id, tree(failures=3)).identical


def test_past_every_intensity_the_root_asks_a_person(store: Store) -> None:
    report = start(store, tree(failures=99))
    assert report.status == "waiting"
    assert restarts(store, report) == [
        ("team", "worker", "worker", 1),
        ("root", "team", "worker", 1),
        ("team", "worker", "worker", 1),
    ]
    assert report.output.startswith("root gave up after 1 restarts within 60 s (one_for_one): ")
    assert "team gave up after 1 restarts" in report.output
    [escalated] = [e for e in store.read(report.episode_id) if isinstance(e, EpisodeEscalated)]
    assert escalated.agent == "worker"


def test_a_nested_supervisors_budget_binds_its_agents(store: Store) -> None:
    busy = [call("noop"), call("noop"), call("noop"), say("done")]
    first = agent(
        "a",
        ScriptedModel([*busy[:2], call("handoff", to="b", reason="b")]),
        handoffs=("b",),
        budget=Budget(steps=4),
    )
    team = Supervisor(
        "team",
        (first, agent("b", ScriptedModel(busy), budget=Budget(steps=4))),
        budget=Budget(steps=4),
    )
    with pytest.raises(TopologyError) as caught:
        Topology("t", Supervisor("root", (team,), budget=Budget(steps=3)))
    assert list(caught.value.problems) == [
        "t.root.children[0].budget.steps: 4 exceeds the supervisor's 3; a child's budget is "
        "carved from its parent's"
    ]
    report = start(store, Topology("t", Supervisor("root", (team,), budget=Budget(steps=10))))
    b = store.read(agent_stream_id(report.episode_id, "b"))
    budget = [e for e in b if isinstance(e, BudgetReserved)]
    # a used two steps and its handoff a third: team's fourth is b's only one.
    assert [e.decision for e in budget] == ["reserved", "deny", "deny"]
    assert budget[1].reason == "no step left on team's budget (limit 4)"


def test_status_shows_the_tree_with_each_supervisors_budget(store: Store) -> None:
    import json

    from rich.console import Console

    from tether.runtime.cli._render import _status_tree
    from tether.runtime.status import episode_status

    topology = tree(failures=0)
    report = start(store, topology)
    source = json.dumps(store.read(report.episode_id)[0].source, sort_keys=True)  # type: ignore[attr-defined]
    status = episode_status(store, report.episode_id, "completed", {source: topology})
    assert [(s.name, s.parent) for s in status.supervisors] == [("root", None), ("team", "root")]
    team = status.supervisors[1]
    worker = {a.name: a for a in status.agents}["worker"]
    assert worker.supervisor == "team" and team.steps.used == worker.steps.used == 1
    console = Console(record=True, width=200)
    console.print(_status_tree([status]))
    text = console.export_text()
    assert "team (supervisor): steps 1 used" in text
    assert text.index("team (supervisor)") < text.index("worker ·")


def test_a_spawn_budget_bounds_the_agents_a_supervisor_starts(store: Store) -> None:
    intake = agent(
        "intake",
        ScriptedModel([call("handoff", to="b", reason="b"), say("done myself")]),
        handoffs=("b",),
    )
    team = Supervisor(
        "team", (intake, agent("b", ScriptedModel([say("-")]))), budget=Budget(spawns=1)
    )
    topology = Topology("t", Supervisor("root", (team,), budget=Budget(spawns=5)))
    report = start(store, topology)
    # The entry agent was team's one start: the handoff that would start b is denied.
    assert report.status == "completed" and report.output == "done myself"
    events = store.read(agent_stream_id(report.episode_id, "intake"))
    [denied] = [e for e in events if isinstance(e, BudgetReserved)]
    assert denied.decision == "deny"
    assert denied.reason == "no spawn left on team's budget (limit 1): b cannot be started"
    assert not store.read(agent_stream_id(report.episode_id, "b"))


def test_a_batch_start_past_the_spawn_budget_records_nothing(store: Store) -> None:
    from tether.memory.errors import BudgetExhausted
    from tether.memory.sources import SequentialIds, StepClock
    from tether.runtime.handles import LocalHost
    from tether.runtime.host import Host
    from tether.runtime.supervisor import RootSupervisor

    workers = tuple(agent(f"w{i}", ScriptedModel([say("-")])) for i in range(4))
    topology = Topology("t", Supervisor("root", workers, budget=Budget(spawns=3)))
    clock, ids = StepClock(), SequentialIds()
    host = Host(topology, store, clock, ids)
    episode = RootSupervisor(topology, store, LocalHost(host), clock, ids).open({})
    with pytest.raises(BudgetExhausted) as caught:
        host.start(episode, {f"w{i}": {} for i in range(4)})
    assert str(caught.value) == (
        "spawn budget of supervisor root exhausted: 0 of 3 agents started; w3 and 0 more of "
        "this batch were not started (nothing was recorded)"
    )
    assert all(not store.read(agent_stream_id(episode, f"w{i}")) for i in range(4))
    assert host.start(episode, {f"w{i}": {} for i in range(3)}) == 3


def test_spawns_are_a_supervisors_budget() -> None:
    with pytest.raises(TopologyError) as caught:
        Topology(
            "t",
            Supervisor(
                "root",
                (agent("a", ScriptedModel([say("-")]), budget=Budget(spawns=2)),),
                budget=Budget(spawns=0),
            ),
        )
    assert list(caught.value.problems) == [
        "t.root.budget.spawns: must be at least 1 (its work starts with an agent)",
        "t.root.children[0].budget.spawns: limits the agents a supervisor starts; set it on "
        "the agent's supervisor",
    ]
