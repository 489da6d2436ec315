"""Verifiers on an agent's answer: a rejection is fed back as a signal and the agent goes
on; too many in a row and it is stuck. Both are on record, and re-execute the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tether.agents import ScriptedModel, say
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import AgentFailed, AnswerRejected, ModelResponded, agent_stream_id
from tether.runtime.reexecute import reexecute
from tether.topologies import Agent, Restarts, Role, Stuck, Supervisor, Topology

from .test_restarts import start


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def names_the_order(answer: str, task: dict[str, Any]) -> str | None:
    return None if "1042" in answer else "the answer must name the order (1042)"


def fleet(script: list[Any], **kw: Any) -> Topology:
    clerk = Agent("clerk", Role("clerk"), ScriptedModel(script), verifiers=(names_the_order,), **kw)
    return Topology("t", Supervisor("root", (clerk,), restarts=Restarts(max_restarts=0)))


def test_a_rejected_answer_is_fed_back_and_the_agent_goes_on(store: Store) -> None:
    topology = fleet([say("refund done"), say("refunded order 1042")])
    report = start(store, topology)
    assert report.status == "completed" and report.output == "refunded order 1042"
    events = store.read(agent_stream_id(report.episode_id, "clerk"))
    [rejected] = [e for e in events if isinstance(e, AnswerRejected)]
    assert (rejected.answer, rejected.reasons) == (
        "refund done",
        ["the answer must name the order (1042)"],
    )
    second = [e for e in events if isinstance(e, ModelResponded)][1]
    assert second.context is not None and second.context["messages"] == 4  # + the feedback
    assert reexecute(store, report.episode_id, topology).identical


def test_too_many_rejections_in_a_row_is_stuck(store: Store) -> None:
    report = start(store, fleet([say("a"), say("b"), say("c")], stuck=Stuck(rejected_answers=2)))
    assert report.status == "waiting"  # escalated
    events = store.read(agent_stream_id(report.episode_id, "clerk"))
    assert len([e for e in events if isinstance(e, AnswerRejected)]) == 2
    [failed] = [e for e in events if isinstance(e, AgentFailed)]
    assert failed.reason == (
        "stuck: its answer failed verification 2 times in a row: the answer must name the "
        "order (1042)"
    )


def test_verifiers_must_be_functions_or_agents() -> None:
    with pytest.raises(TopologyError, match=r"verifiers: must be a tuple of functions"):
        Topology(
            "t",
            Supervisor(
                "root",
                (Agent("a", Role("a"), ScriptedModel([say("-")]), verifiers=(3,)),),  # type: ignore[arg-type]
            ),
        )


# --- verifiers that are agents --------------------------------------------------------


def checked_fleet(clerk_script: list[Any], checker_script: list[Any]) -> Topology:
    clerk = Agent(
        "clerk",
        Role("clerk"),
        ScriptedModel(clerk_script),
        verifiers=(names_the_order, "checker"),
    )
    checker = Agent("checker", Role("checker"), ScriptedModel(checker_script))
    return Topology("t", Supervisor("root", (clerk, checker), restarts=Restarts(max_restarts=0)))


def test_a_verifier_agent_checks_what_the_functions_passed(store: Store) -> None:
    seen: list[dict[str, Any]] = []

    def check(request: Any) -> Any:
        task = json.loads(request.messages[1].content)
        seen.append(json.loads(task["task"]))
        if "refunded 20" not in seen[-1]["answer"]:
            return say("name the amount refunded")
        return say("approve: amount and order named")

    topology = checked_fleet(
        [say("refund done"), say("refunded order 1042"), say("refunded 20 on order 1042")],
        [check],
    )
    report = start(store, topology)
    assert (report.status, report.output) == ("completed", "refunded 20 on order 1042")
    # The first answer failed the function, so the checker never saw it.
    assert [s["answer"] for s in seen] == ["refunded order 1042", "refunded 20 on order 1042"]
    assert seen[0]["task"] == {}  # the agent's task, beside its answer
    events = store.read(agent_stream_id(report.episode_id, "clerk"))
    rejected = [e.reasons for e in events if isinstance(e, AnswerRejected)]
    assert rejected == [
        ["the answer must name the order (1042)"],
        ["checker: name the amount refunded"],
    ]
    assert reexecute(store, report.episode_id, topology).identical


def test_a_verifier_agent_that_fails_rejects_the_answer(store: Store) -> None:
    topology = checked_fleet(
        [say("refunded order 1042"), say("refunded order 1042 again")],
        [RuntimeError("the checker's model broke")],
    )
    clerk = topology.agents()["clerk"]
    assert clerk.stuck.rejected_answers == 3
    report = start(store, topology)
    events = store.read(agent_stream_id(report.episode_id, "clerk"))
    [first, *_] = [e for e in events if isinstance(e, AnswerRejected)]
    assert first.reasons[0].startswith("checker could not verify it: ")
    assert "the checker's model broke" in first.reasons[0]


def test_verifier_agents_are_checked_like_workers() -> None:
    clerk = Agent(
        "clerk", Role("clerk"), ScriptedModel([]), verifiers=(names_the_order, "nobody", "clerk")
    )
    loop = Agent("judge", Role("judge"), ScriptedModel([]), verifiers=(names_the_order, "clerk2"))
    clerk2 = Agent("clerk2", Role("clerk2"), ScriptedModel([]), handoffs=("judge",))
    with pytest.raises(TopologyError) as e:
        Topology("t", Supervisor("root", (clerk, loop, clerk2)))
    text = str(e.value)
    assert "t.root.children[0].verifiers[1]: unknown agent 'nobody'" in text
    assert "t.root.children[0].verifiers[2]: an agent cannot verify itself" in text
    assert "t.root.children[1].verifiers[1]: work delegated to 'clerk2' can come back" in text
