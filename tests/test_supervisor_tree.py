"""Nested supervisors: a supervisor past its intensity gives up to its parent, which
restarts its work within its own intensity; the root asks a person. Budgets carve down
the tree and bind every agent under each supervisor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tether.agents import ScriptedModel, call, say
from tether.memory import Store
from tether.memory.events import AgentRestarted, BudgetReserved, EpisodeEscalated, agent_stream_id
from tether.runtime.errors import TopologyError
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

    from tether.runtime.cli import _status_tree
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
