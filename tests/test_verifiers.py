"""Verifiers on an agent's answer: a rejection is fed back as a signal and the agent goes
on; too many in a row and it is stuck. Both are on record, and re-execute the same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tether.agents import ScriptedModel, say
from tether.memory import Store
from tether.memory.events import AgentFailed, AnswerRejected, ModelResponded, agent_stream_id
from tether.runtime.errors import TopologyError
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


def test_verifiers_must_be_functions() -> None:
    with pytest.raises(TopologyError, match=r"verifiers: must be a tuple of functions"):
        Topology(
            "t",
            Supervisor(
                "root",
                (Agent("a", Role("a"), ScriptedModel([say("-")]), verifiers=("x",)),),  # type: ignore[arg-type]
            ),
        )
