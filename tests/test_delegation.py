"""Agents as tools and fan-out: a delegator's ``delegate`` calls are run by its supervisor
and answered as the calls' results; a map-reduce spreads a list over worker copies and
hands every answer, and every failure, to its reducer; both resume mid-way and
re-execute by running the workers again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ModelRequest, ModelTurn, ScriptedModel, ToolCall, call, calls, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import TopologyError
from tether.memory.events import (
    AgentDelegated,
    AgentRestarted,
    BoundariesChecked,
    Event,
    TaskAssigned,
    WorkAnswered,
    agent_stream_id,
)
from tether.runtime import Host, RootSupervisor
from tether.runtime.handles import LocalHost
from tether.runtime.inbox import Inbox
from tether.runtime.reexecute import reexecute
from tether.topologies import (
    Agent,
    Budget,
    Grant,
    Restarts,
    Role,
    Supervisor,
    Topology,
    map_reduce,
    pipeline,
    supervisor_workers,
)

FAST = Restarts(backoff_s=0, max_backoff_s=0)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def agent(name: str, *script: Any, **kw: Any) -> Agent:
    return Agent(name, Role(name, kw.pop("grants", ())), ScriptedModel(list(script)), **kw)


def supervisor(
    topology: Topology, store: Store, ids: SequentialIds | None = None
) -> RootSupervisor:
    """A fresh host and supervisor, as after a restart (``ids``: the ids drawn so far)."""
    clock, ids = StepClock(), ids or SequentialIds()
    host = Host(topology, store, clock, ids, sleep=lambda s: None)
    return RootSupervisor(topology, store, LocalHost(host), clock, ids, sleep=lambda s: None)


def stream(store: Store, report: Any, name: str) -> list[Event]:
    return store.read(agent_stream_id(report.episode_id, name))


def tasks(store: Store, report: Any, name: str) -> list[dict[str, Any]]:
    return [e.task for e in stream(store, report, name) if isinstance(e, TaskAssigned)]


def tool_messages(request: ModelRequest) -> dict[str, str]:
    return {str(m.call_id): m.content for m in request.messages if m.role == "tool"}


# --- supervisor / workers -------------------------------------------------------------


def test_a_manager_gets_its_workers_answers_as_the_results_of_its_calls(store: Store) -> None:
    seen: list[dict[str, str]] = []

    def sum_up(request: ModelRequest) -> ModelTurn:
        seen.append(tool_messages(request))
        return say("both answered")

    shape = supervisor_workers(
        "desk",
        agent(
            "lead",
            calls(
                ToolCall("delegate", {"to": "pricing", "task": "price plan A"}, id="c1"),
                ToolCall("delegate", {"to": "legal", "task": "check plan A"}, id="c2"),
            ),
            sum_up,
        ),
        agent("pricing", say("A costs 12")),
        agent("legal", say("A is fine")),
    )
    report = supervisor(Topology("t", shape), store).start({"plan": "A"})
    assert (report.status, report.output) == ("completed", "both answered")
    [answers] = seen
    assert json.loads(answers["c1"]) == {
        "by": "pricing",
        "outcome": "finished",
        "answer": "A costs 12",
    }
    assert json.loads(answers["c2"])["answer"] == "A is fine"
    [pricing_task] = tasks(store, report, "pricing")
    assert pricing_task["task"] == "price plan A" and pricing_task["from"] == "lead"
    assert pricing_task["call"] == "lead#1" and pricing_task["input"] == {"plan": "A"}
    lead = stream(store, report, "lead")
    [delegated] = [e for e in lead if isinstance(e, AgentDelegated)]
    assert [c["to"] for c in delegated.calls] == ["pricing", "legal"]
    [answered] = [e for e in lead if isinstance(e, WorkAnswered)]
    assert [a["key"] for a in answered.answers] == ["lead#1", "lead#2"]
    lead_spec = shape.children[0]
    assert isinstance(lead_spec, Agent) and lead_spec.workers == ("pricing", "legal")


def test_a_worker_that_fails_for_good_is_reported_to_its_manager(store: Store) -> None:
    seen: list[dict[str, str]] = []

    def cope(request: ModelRequest) -> ModelTurn:
        seen.append(tool_messages(request))
        return say("went on without it")

    shape = supervisor_workers(
        "desk",
        agent("lead", call("delegate", to="flaky", task="try"), cope),
        agent("flaky", RuntimeError("the worker's model broke"), restart="temporary"),
        restarts=FAST,
    )
    report = supervisor(Topology("t", shape), store).start({})
    assert report.output == "went on without it"
    [answers] = seen
    [answer] = answers.values()
    got = json.loads(answer)
    assert got["outcome"] == "failed" and "the worker's model broke" in got["answer"]


def test_a_failed_worker_is_restarted_before_its_manager_hears_of_it(store: Store) -> None:
    broke = [False]

    def once(request: ModelRequest) -> ModelTurn:
        if not broke[0]:
            broke[0] = True
            raise RuntimeError("blip")
        return say("done the second time")

    shape = supervisor_workers(
        "desk",
        agent("lead", call("delegate", to="w", task="x"), say("ok")),
        Agent("w", Role("w"), ScriptedModel([once, once])),
        restarts=FAST,
    )
    report = supervisor(Topology("t", shape), store).start({})
    assert report.status == "completed"
    [restarted] = [e for e in store.read(report.episode_id) if isinstance(e, AgentRestarted)]
    assert restarted.agent == "w"
    assert [t["call"] for t in tasks(store, report, "w")] == ["lead#1", "lead#1"]
    [answered] = [e for e in stream(store, report, "lead") if isinstance(e, WorkAnswered)]
    assert answered.answers[0]["answer"] == "done the second time"


def test_delegating_to_an_agent_that_is_not_a_worker_is_denied(store: Store) -> None:
    shape = supervisor_workers(
        "desk",
        agent("lead", call("delegate", to="outsider", task="x"), say("could not")),
        agent("w", say("-")),
    )
    root = Supervisor("root", (shape, agent("outsider", say("-"))))
    report = supervisor(Topology("t", root), store).start({})
    assert report.output == "could not"
    checked = [e for e in stream(store, report, "lead") if isinstance(e, BoundariesChecked)]
    assert checked[0].decision == "deny" and "'outsider' is not allowed" in checked[0].reason
    assert tasks(store, report, "outsider") == []


def test_a_worker_may_hand_its_task_on_and_the_last_agent_answers_the_call(store: Store) -> None:
    root = Supervisor(
        "root",
        (
            agent("lead", call("delegate", to="first", task="x"), say("fine"), workers=("first",)),
            agent("first", call("handoff", to="second", reason="its field"), handoffs=("second",)),
            agent("second", say("answered by second")),
        ),
    )
    report = supervisor(Topology("t", root), store).start({})
    assert report.output == "fine"
    [answered] = [e for e in stream(store, report, "lead") if isinstance(e, WorkAnswered)]
    assert answered.answers[0]["by"] == "second"
    [second_task] = tasks(store, report, "second")
    assert second_task["call"] == "lead#1"  # the handoff carries the call it answers


def test_delegation_mistakes_are_named_with_their_places() -> None:
    with pytest.raises(TopologyError) as e:
        Topology(
            "t",
            Supervisor(
                "root",
                (
                    agent("a", workers=("b", "nobody", "a")),
                    agent("b", handoffs=("c",)),
                    agent("c", workers=("a",)),
                ),
            ),
        )
    text = str(e.value)
    assert "t.root.children[0].workers[1]: unknown agent 'nobody'" in text
    assert "t.root.children[0].workers[2]: an agent cannot delegate to itself" in text
    assert "t.root.children[0].workers[0]: work delegated to 'b' can come back to 'a'" in text
    assert "t.root.children[2].workers[0]: work delegated to 'a' can come back to 'c'" in text


# --- map-reduce -----------------------------------------------------------------------


def researcher(**kw: Any) -> Agent:
    def answer(request: ModelRequest) -> ModelTurn:
        task = json.loads(json.loads(request.messages[1].content)["task"])
        if task["item"] == "boom":
            raise RuntimeError("could not research boom")
        return say(f"notes on {task['item']}")

    return Agent("researcher", Role("researcher"), ScriptedModel([answer]), **kw)


def reducer(seen: list[dict[str, Any]]) -> Agent:
    def reduce(request: ModelRequest) -> ModelTurn:
        task = json.loads(request.messages[1].content)
        seen.append(json.loads(task["note"]))
        return say("report")

    return Agent("editor", Role("editor"), ScriptedModel([reduce]))


def test_a_map_reduce_spreads_the_items_over_worker_copies_then_reduces(store: Store) -> None:
    seen: list[dict[str, Any]] = []
    shape = map_reduce(
        "survey", researcher(), reducer(seen), over="questions", copies=2, restarts=FAST
    )
    assert [c.name for c in shape.children] == [
        "survey.split",
        "researcher-1",
        "researcher-2",
        "editor",
    ]
    questions = ["q0", "q1", "q2", "q3", "q4"]
    report = supervisor(Topology("t", shape), store).start({"questions": questions})
    assert (report.status, report.output) == ("completed", "report")
    [note] = seen
    assert [r["answer"] for r in note["results"]] == [f"notes on {q}" for q in questions]
    assert [r["by"] for r in note["results"]] == ["researcher-1", "researcher-2"] * 2 + [
        "researcher-1"
    ]
    assert note["failed"] == [] and note["over"] == "questions"
    one = [json.loads(t["task"])["item"] for t in tasks(store, report, "researcher-1")]
    assert one == ["q0", "q2", "q4"]


def test_a_failed_item_is_reported_to_the_reducer_not_lost(store: Store) -> None:
    seen: list[dict[str, Any]] = []
    shape = map_reduce(
        "survey",
        researcher(restart="temporary"),
        reducer(seen),
        over="questions",
        restarts=FAST,
    )
    report = supervisor(Topology("t", shape), store).start({"questions": ["a", "boom", "c"]})
    assert report.status == "completed"
    [note] = seen
    assert [r["item"] for r in note["results"]] == ["a", "c"]
    [failed] = note["failed"]
    assert failed["item"] == "boom" and failed["index"] == 1
    assert "could not research boom" in failed["reason"]


def test_a_spawn_budget_counts_the_workers_a_turn_delegated_to(store: Store) -> None:
    seen: list[dict[str, str]] = []

    def cope(request: ModelRequest) -> ModelTurn:
        seen.append(tool_messages(request))
        return say("two of three")

    shape = supervisor_workers(
        "desk",
        agent(
            "lead",
            calls(*(ToolCall("delegate", {"to": w, "task": "x"}, id=w) for w in "abc")),
            cope,
        ),
        agent("a", say("A")),
        agent("b", say("B")),
        agent("c", say("C")),
        budget=Budget(spawns=3),  # the lead and two workers: none started when it asks
    )
    report = supervisor(Topology("t", shape), store).start({})
    assert report.output == "two of three"
    [answers] = seen
    assert json.loads(answers["a"])["answer"] == "A" and json.loads(answers["b"])["answer"] == "B"
    assert "denied by budget: no spawn left on desk's budget (limit 3)" in answers["c"]
    assert tasks(store, report, "c") == []


def test_a_map_reduce_whose_spawn_budget_cannot_start_it_is_refused() -> None:
    with pytest.raises(TopologyError) as e:
        map_reduce("survey", researcher(), reducer([]), over="q", copies=3, budget=Budget(spawns=4))
    assert "survey.budget.spawns: 4 cannot start the split step, 3 copies" in str(e.value)
    assert "give at least 5, or fewer copies" in str(e.value)


def test_a_map_reduce_without_its_list_says_where_to_put_it(store: Store) -> None:
    shape = map_reduce("survey", researcher(), reducer([]), over="questions")
    report = supervisor(Topology("t", shape), store).start({"question": "typo"})
    assert report.status == "waiting"  # escalated to a person, with the reason
    assert "no list at 'questions'" in report.output
    assert "give the episode input a list there" in report.output


def test_map_reduce_mistakes_are_named() -> None:
    with pytest.raises(TopologyError) as e:
        map_reduce("s", researcher(), reducer([]), over="", copies=0)
    assert "s.over: must name where the list is" in str(e.value)
    assert "s.copies: must be a positive integer, got 0" in str(e.value)


def test_a_shape_can_be_the_reducer_and_a_worker_can_delegate_in_turn(store: Store) -> None:
    seen: list[dict[str, Any]] = []
    crew = supervisor_workers(
        "crew",
        agent("chief", call("delegate", to="helper", task="help"), say("chief's notes")),
        agent("helper", say("helped")),
    )
    shape = map_reduce(
        "survey",
        crew,
        Supervisor("desk", (reducer(seen),)),
        over="questions",
    )
    report = supervisor(Topology("t", shape), store).start({"questions": ["a", "b"]})
    assert report.output == "report"
    assert [r["answer"] for r in seen[0]["results"]] == ["chief's notes", "chief's notes"]
    assert [t["call"] for t in tasks(store, report, "helper")] == ["chief#1", "chief#2"]


# --- resuming and re-executing --------------------------------------------------------


class Args(BaseModel):
    item: str


@tool()
def publish(args: Args, ctx: Any) -> dict[str, Any]:
    """Publish notes on an item."""
    return {"published": args.item}


def publishing_researcher() -> Agent:
    def work(request: ModelRequest) -> ModelTurn:
        task = json.loads(json.loads(request.messages[1].content)["task"])
        return call("publish", item=task["item"])

    def done(request: ModelRequest) -> ModelTurn:
        return say(f"published {tool_messages(request)}")

    return Agent(
        "researcher",
        Role("researcher", (Grant("publish", tier="high"),)),
        ScriptedModel([work, done]),
        tools=(publish,),
    )


def test_a_fan_out_waiting_for_a_person_resumes_where_it_stopped(store: Store) -> None:
    seen: list[dict[str, Any]] = []
    topology = Topology(
        "t", map_reduce("survey", publishing_researcher(), reducer(seen), over="items", copies=2)
    )
    ids = SequentialIds()
    report = supervisor(topology, store, ids).start({"items": ["a", "b", "c"]})
    # Each copy ran its first item as far as it could: each waits for a sign-off. The
    # third item waits for researcher-1, which waits for a person.
    assert report.status == "waiting" and len(report.waiting) == 2
    inbox = Inbox(store, StepClock())
    for approval in report.waiting:
        inbox.approve(approval, "alice", "fine")
    again = supervisor(topology, store, ids).resume(report.episode_id)
    assert again.status == "waiting" and len(again.waiting) == 1  # c, now given
    inbox.approve(again.waiting[0], "alice", "fine")
    again = supervisor(topology, store, ids).resume(report.episode_id)
    assert (again.status, again.output) == ("completed", "report")
    [note] = seen
    assert [r["item"] for r in note["results"]] == ["a", "b", "c"]
    assert len(tasks(store, report, "researcher-1")) == 2  # a and c, each given once
    split = [e for e in stream(store, report, "survey.split") if isinstance(e, AgentDelegated)]
    assert len(split) == 1  # the split step did not fan out again
    assert reexecute(store, report.episode_id, topology).identical


class Crash(BaseException):
    """Stands for the driver's process dying (not an agent failing)."""


def test_a_fan_out_cut_short_by_a_crash_goes_on_from_its_record(store: Store) -> None:
    crash = [True]

    def answer(request: ModelRequest) -> ModelTurn:
        item = json.loads(json.loads(request.messages[1].content)["task"])["item"]
        if item == "c" and crash[0]:
            crash[0] = False
            raise Crash()
        return say(f"notes on {item}")

    seen: list[dict[str, Any]] = []
    worker = Agent("researcher", Role("researcher"), ScriptedModel([answer]))
    topology = Topology("t", map_reduce("survey", worker, reducer(seen), over="items"))
    first = supervisor(topology, store)
    started: list[Any] = []
    first.on_episode = started.append
    with pytest.raises(Crash):
        first.start({"items": ["a", "b", "c", "d"]})
    [episode] = started
    report = supervisor(topology, store).resume(episode)
    assert (report.status, report.output) == ("completed", "report")
    [note] = seen
    assert [r["answer"] for r in note["results"]] == [f"notes on {i}" for i in "abcd"]
    given = [json.loads(t["task"])["item"] for t in tasks(store, report, "researcher")]
    assert given == ["a", "b", "c", "d"]  # a and b were not given again


def test_re_execution_runs_the_workers_again(store: Store) -> None:
    seen: list[dict[str, Any]] = []
    topology = Topology(
        "t", map_reduce("survey", researcher(), reducer(seen), over="questions", copies=2)
    )
    report = supervisor(topology, store).start({"questions": ["a", "b", "c"]})
    result = reexecute(store, report.episode_id, topology)
    assert result.identical
    # A change to a worker shows where its answers would have differed.
    changed = Topology(
        "t",
        map_reduce(
            "survey",
            researcher(verifiers=(lambda answer, task: "too short" if "a" in answer else None,)),
            reducer([]),
            over="questions",
            copies=2,
        ),
    )
    diverged = reexecute(store, report.episode_id, changed)
    assert not diverged.identical and diverged.divergence is not None
    assert diverged.divergence.agent == "researcher-1"


def test_a_planner_hands_its_list_to_a_map_reduce_at_the_end_of_a_pipeline(
    store: Store,
) -> None:
    seen: list[dict[str, Any]] = []
    note = json.dumps({"questions": ["p", "q"]})
    planner = agent("planner", call("handoff", to="survey.split", reason="planned", note=note))
    shape = pipeline(
        "plan_then_survey",
        planner,
        map_reduce("survey", researcher(), reducer(seen), over="questions"),
    )
    first = shape.children[0]
    assert isinstance(first, Agent) and first.handoffs == ("survey.split",)
    report = supervisor(Topology("t", shape), store).start({"topic": "t"})
    assert report.output == "report"
    assert [r["answer"] for r in seen[0]["results"]] == ["notes on p", "notes on q"]
