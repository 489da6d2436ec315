"""A model that fails transiently is retried, bounded, with the attempts recorded; re-
execution feeds the failures back and finds the run identical."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tether.agents import call, flaky, say
from tether.memory import Store
from tether.memory.errors import TopologyError
from tether.memory.events import AgentFailed, ModelResponded
from tether.runtime.reexecute import reexecute
from tether.topologies import Grant, Retries, Topology

from .test_gate import Run, fleet


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def with_retries(script: list[object], retries: Retries) -> Topology:
    topology = fleet(script, grants=(Grant("noop", tier="low"),))
    clerk = dataclasses.replace(topology.agents()["clerk"], retries=retries)
    return dataclasses.replace(topology, root=dataclasses.replace(topology.root, children=(clerk,)))


NO_WAIT = Retries(attempts=3, backoff_s=0, max_backoff_s=0)


def test_a_transient_failure_is_retried_and_the_attempts_recorded(store: Store) -> None:
    run = Run(store, with_retries([flaky(call("noop"), failures=2), say("done")], NO_WAIT))
    assert run.report.status == "completed"
    turns = [e for e in run.events() if isinstance(e, ModelResponded)]
    assert [t.attempts for t in turns] == [3, 1]


def test_retries_are_bounded(store: Store) -> None:
    topology = with_retries([flaky(call("noop"), failures=3), say("done")], NO_WAIT)
    clerk = dataclasses.replace(topology.agents()["clerk"], restart="temporary")
    topology = dataclasses.replace(
        topology, root=dataclasses.replace(topology.root, children=(clerk,))
    )
    run = Run(store, topology)
    assert run.report.status == "waiting"  # escalated to a person, with the reason
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.reason == ("model failed after 3 attempts: 503 from the provider (attempt 3)")


def test_reexecution_feeds_the_failures_back(store: Store) -> None:
    topology = with_retries([flaky(call("noop"), failures=1), say("done")], NO_WAIT)
    run = Run(store, topology)
    assert run.report.status == "completed"
    result = reexecute(store, run.episode, topology)
    assert result.identical, result.divergence


def test_retries_must_make_sense() -> None:
    with pytest.raises(TopologyError, match=r"retries.attempts: must be an integer of at least 1"):
        with_retries([say("-")], Retries(attempts=0))


def test_a_model_that_failed_every_retry_re_executes_identically(store: Store) -> None:
    # The model fails a whole turn (every retry); the supervisor restarts the agent, whose
    # model then answers. Re-execution must fail that turn too, not ask the record for a
    # turn it does not have (found by the live suite, with a real model timing out).
    topology = with_retries([flaky(call("noop"), failures=3), call("noop"), say("done")], NO_WAIT)
    run = Run(store, topology)
    assert run.report.status == "completed"
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert failed.model_calls == 3
    result = reexecute(store, run.episode, topology)
    assert result.identical, result.divergence


def test_a_model_error_not_worth_a_retry_re_executes_identically(store: Store) -> None:
    from tether.agents.model import ModelRequest, ModelTurn
    from tether.memory.errors import ModelError

    refused = iter([True])

    def once_refused(request: ModelRequest) -> ModelTurn:
        if next(refused, False):
            raise ModelError("fake-1: 400: messages: unknown role 'robot'")
        return call("noop")

    run = Run(store, with_retries([once_refused, once_refused, say("done")], NO_WAIT))
    [failed] = [e for e in run.events() if isinstance(e, AgentFailed)]
    assert (failed.reason, failed.model_calls) == ("fake-1: 400: messages: unknown role 'robot'", 1)
    result = reexecute(store, run.episode, with_retries([call("noop"), say("done")], NO_WAIT))
    assert result.identical, result.divergence
