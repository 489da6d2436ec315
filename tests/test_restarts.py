"""Supervision: an agent that fails is restarted as its supervisor's policy says, with
what it spent still spent; past the restart intensity the supervisor gives up."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import ModelRequest, ModelTurn, ScriptedModel, Usage, call, say
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory.errors import TopologyError
from tether.memory.events import AgentRestarted, EpisodeEscalated
from tether.memory.store import Journal
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.restarts import RestartPolicy
from tether.runtime.status import fleet_status
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Budget, Grant, Restarts, Role, Supervisor, Topology

from .test_gate import noop

FAST = Restarts(backoff_s=0, max_backoff_s=0)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


class FailsFirst:
    """A model whose first ``failures`` runs of the task crash at the second turn."""

    name = "fails-first"

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def respond(self, request: ModelRequest) -> ModelTurn:
        if request.turn == 0:
            return call("noop")
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("the model's client blew up")
        return say("done")


def agent(name: str, model: Any, **kw: Any) -> Agent:
    return Agent(name, Role(name, (Grant("noop", tier="low"),)), model, (noop,), **kw)


def start(store: Store, topology: Topology, sleep: Any = None) -> Any:
    clock, ids = StepClock(), SequentialIds()
    host = Host(topology, store, clock, ids)
    kw = {"sleep": sleep} if sleep is not None else {}
    return RootSupervisor(topology, store, LocalHost(host), clock, ids, **kw).start({}, {})


def test_a_failed_agent_is_restarted_and_what_it_spent_stays_spent(store: Store) -> None:
    topology = Topology(
        "t",
        Supervisor("root", (agent("a", FailsFirst(1), budget=Budget(steps=5)),), restarts=FAST),
    )
    report = start(store, topology)
    assert report.status == "completed"
    [restarted] = [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
    assert (restarted.agent, restarted.failed, restarted.restart) == ("a", "a", 1)
    assert restarted.reason == "crashed: RuntimeError: the model's client blew up"
    [row] = load_timeline(store, report.episode_id).agents
    assert (row.restarts, row.steps_used) == (1, 2)  # a step in each run, both counted
    [shown] = fleet_status(store, finished=True)
    assert shown.agents[0].restarts == 1
    result = CliRunner().invoke(app, ["status", "--all", "--db", store.url])
    assert "a · finished: done · steps 2 used" in result.output
    assert "restarts: 1" in result.output


def test_past_its_intensity_the_supervisor_gives_up(store: Store) -> None:
    waits: list[float] = []
    policy = Restarts(max_restarts=2, period_s=60, backoff_s=1, max_backoff_s=10)
    topology = Topology("t", Supervisor("root", (agent("a", FailsFirst(99)),), restarts=policy))
    report = start(store, topology, sleep=waits.append)
    assert report.status == "waiting"  # escalated to a person
    assert report.output == (
        "root gave up after 2 restarts within 60 s (one_for_one): crashed: RuntimeError: "
        "the model's client blew up"
    )
    assert [e.restart for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)] == [
        1,
        2,
    ]
    # Exponential backoff with jitter: up to 1 s, then up to 2 s, never below half.
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2
    assert isinstance(store.read(report.episode_id)[-1], EpisodeEscalated)


def test_one_for_all_restarts_the_work_from_the_entry_agent(store: Store) -> None:
    first = agent(
        "first",
        ScriptedModel([call("handoff", to="second", reason="yours")] * 3),
        handoffs=("second",),
    )
    second = agent("second", FailsFirst(1))
    topology = Topology(
        "t",
        Supervisor(
            "root", (first, second), restarts=dataclasses.replace(FAST, strategy="one_for_all")
        ),
    )
    report = start(store, topology)
    assert report.status == "completed"
    [restarted] = [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
    assert (restarted.agent, restarted.failed, restarted.strategy) == (
        "first",
        "second",
        "one_for_all",
    )
    rows = {r.name: r for r in load_timeline(store, report.episode_id).agents}
    assert rows["first"].assigned_by == ["operator", "operator"]


def test_temporary_agents_and_budget_failures_are_not_restarted(store: Store) -> None:
    temporary = Topology(
        "t", Supervisor("root", (agent("a", FailsFirst(1), restart="temporary"),), restarts=FAST)
    )
    assert start(store, temporary).status == "waiting"  # escalated, not restarted
    # Out of model tokens: a restart could not find more.
    costly = dataclasses.replace(call("noop"), usage=Usage(input_tokens=90, output_tokens=10))
    spent = Topology(
        "t2",
        Supervisor(
            "root",
            (agent("b", ScriptedModel([costly] * 3), budget=Budget(tokens=100)),),
            restarts=FAST,
        ),
    )
    clock, ids = StepClock(), SequentialIds(100)
    host = LocalHost(Host(spent, store, clock, ids))
    report = RootSupervisor(spent, store, host, clock, ids).start({}, {})
    assert report.status == "waiting" and report.output.startswith("budget: token budget of b")
    assert not [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]


def test_a_restart_policy_must_make_sense() -> None:
    with pytest.raises(TopologyError) as caught:
        Topology(
            "t",
            Supervisor(
                "root",
                (agent("a", ScriptedModel([say("-")]), restart="sometimes"),),
                restarts=Restarts(strategy="all_for_one", max_restarts=-1),  # type: ignore[arg-type]
            ),
        )
    problems = str(caught.value)
    assert "t.root.restarts.strategy: 'all_for_one' is not a strategy" in problems
    assert "t.root.restarts.max_restarts: must be an integer of 0 or more" in problems
    assert "t.root.children[0].restart: 'sometimes' is not a restart type" in problems


def test_a_persons_retry_opens_a_new_window(store: Store) -> None:
    from tether.runtime.escalation import Escalations

    # One restart allowed: fail, restart, fail, escalate; the person retries; fail again:
    # that is a new window, so the supervisor restarts once more rather than escalating.
    policy = Restarts(max_restarts=1, backoff_s=0, max_backoff_s=0)
    topology = Topology("t", Supervisor("root", (agent("a", FailsFirst(3)),), restarts=policy))
    clock, ids = StepClock(), SequentialIds()

    def supervisor() -> RootSupervisor:
        return RootSupervisor(
            topology, store, LocalHost(Host(topology, store, clock, ids)), clock, ids
        )

    report = supervisor().start({}, {})
    assert report.status == "waiting"
    [item] = Escalations(store, clock).items()
    Escalations(store, clock).decide(item.id, "retry", "alice", "once more")
    report = supervisor().resume(report.episode_id)
    assert report.status == "completed"
    restarts = [e.restart for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
    assert restarts == [1, 0, 1]


def test_the_restart_policy_counts_its_window_and_backs_off_without_a_supervisor(
    store: Store,
) -> None:
    # The policy alone, over an episode stream: no host, no model, no Ray.
    root = Supervisor(
        "root",
        (agent("a", ScriptedModel([say("done")])),),
        restarts=Restarts(max_restarts=2, period_s=60, backoff_s=1, max_backoff_s=30),
    )
    topology = Topology("t", root)
    waits: list[float] = []
    policy = RestartPolicy(topology, store, sleep=waits.append, jitter=random.Random(7))
    clock = StepClock()
    journal = Journal(store, SequentialIds().new(), clock)
    # Agent a fails twice: the root restarts it, waiting up to 1 s, then up to 2 s.
    for n in (1, 2):
        found = policy.who_restarts(journal, "a", "boom", clock.now())
        assert not isinstance(found, str)
        sup, number, child, reason = found
        assert (sup.name, number, child, reason) == ("root", n, "a", "boom")
        policy.record(journal, "a", "a", "boom", "one_for_one", number, sup.name)
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0
    # A third failure within the minute is past the intensity: the root gives up.
    gave_up = policy.who_restarts(journal, "a", "boom", clock.now())
    assert gave_up == "root gave up after 2 restarts within 60 s (one_for_one): boom"
    assert [e.restart for e in store.read(journal.stream_id)] == [1, 2]
    assert len(waits) == 2  # giving up waits for nothing
