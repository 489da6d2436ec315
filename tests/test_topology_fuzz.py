"""Malformed topologies, generated: building one either succeeds or raises tether's own
``TopologyError`` listing the problems; never a ``TypeError`` or ``AttributeError`` from
inside the validator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.agents import Price, ScriptedModel, say
from tether.memory.errors import TopologyError
from tether.topologies import (
    Agent,
    AllowedValues,
    ApprovalThreshold,
    Budget,
    Grant,
    RateLimit,
    Restarts,
    Retries,
    Role,
    SpendCap,
    Stuck,
    Supervisor,
    Topology,
    critic_loop,
    map_reduce,
    pipeline,
    supervisor_workers,
    swarm,
)

from .test_gate import ALL_TOOLS

junk: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.tuples(st.text(max_size=3)),
    st.just(object()),
    st.decimals(allow_nan=True, allow_infinity=True),
)
names = st.one_of(st.sampled_from(["a", "b", "c", "root", "pay", "noop"]), junk)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed values, sometimes junk."""
    return st.one_of(strategy, strategy, junk)


budgets = st.builds(
    Budget,
    steps=maybe(st.one_of(st.none(), st.integers(0, 20))),
    tokens=maybe(st.one_of(st.none(), st.integers(0, 1000))),
    cost=maybe(st.one_of(st.none(), st.decimals(0, 10, places=2))),
    ttl_s=maybe(st.one_of(st.none(), st.floats(1, 100))),
    spawns=maybe(st.one_of(st.none(), st.integers(1, 5))),
)
grants = st.builds(
    Grant,
    tool=names,
    tier=maybe(st.sampled_from(["low", "medium", "high", None])),
    approval=maybe(st.one_of(st.none(), st.builds(ApprovalThreshold, field=names, above=junk))),
    secrets=maybe(st.tuples(st.text(max_size=3))),
)
roles = st.builds(Role, name=names, grants=maybe(st.lists(maybe(grants), max_size=3).map(tuple)))
rails = st.one_of(
    st.builds(AllowedValues, tool=names, field=names, values=junk),
    st.builds(SpendCap, tool=names, field=names, per_call=junk, per_episode=junk),
    st.builds(RateLimit, tool=names, calls=junk, per_s=junk),
    junk,
)
agents = st.builds(
    Agent,
    name=names,
    role=maybe(roles),
    model=st.one_of(st.just(ScriptedModel([say("-")])), junk),
    tools=maybe(st.just(ALL_TOOLS)),
    rails=maybe(st.lists(rails, max_size=2).map(tuple)),
    budget=maybe(budgets),
    handoffs=maybe(st.lists(names, max_size=2).map(tuple)),
    peers=maybe(st.lists(names, max_size=2).map(tuple)),
    workers=maybe(st.lists(names, max_size=2).map(tuple)),
    max_turns=maybe(st.integers(0, 5)),
    context_tokens=maybe(st.one_of(st.none(), st.integers(0, 200))),
    stuck=maybe(st.builds(Stuck, repeats=junk, no_progress_steps=junk, rejected_answers=junk)),
    retries=maybe(st.builds(Retries, attempts=junk, backoff_s=junk, max_backoff_s=junk)),
    restart=maybe(st.sampled_from(["permanent", "transient", "temporary"])),
    price=maybe(st.one_of(st.none(), st.builds(Price, input_per_mtok=junk, output_per_mtok=junk))),
    isolated=maybe(st.booleans()),
    node=maybe(st.one_of(st.none(), st.text(max_size=3))),
    memory=maybe(st.lists(st.text(max_size=5), max_size=2).map(tuple)),
    verifiers=maybe(
        st.lists(st.one_of(st.just(lambda a, t: None), names, junk), max_size=2).map(tuple)
    ),
)
restarts = st.builds(
    Restarts,
    strategy=maybe(st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"])),
    max_restarts=maybe(st.integers(0, 3)),
    period_s=junk,
    backoff_s=junk,
    max_backoff_s=junk,
)


def supervisors(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Supervisor]:
    return st.builds(
        Supervisor,
        name=names,
        children=maybe(st.lists(children, max_size=3).map(tuple)),
        budget=maybe(budgets),
        entry=maybe(st.one_of(st.none(), names)),
        restarts=maybe(restarts),
        role=maybe(st.one_of(st.none(), roles)),
    )


trees = st.recursive(agents, lambda inner: supervisors(st.one_of(agents, inner)), max_leaves=6)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=names, root=maybe(supervisors(st.one_of(agents, trees))), untrusted=junk)
def test_a_malformed_topology_raises_only_tethers_own_error(
    name: Any, root: Any, untrusted: Any
) -> None:
    try:
        Topology(name, root, untrusted_input=untrusted if isinstance(untrusted, tuple) else ())
    except TopologyError as e:
        assert e.problems and all(isinstance(p, str) and ": " in p for p in e.problems)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    shape=st.sampled_from(["pipeline", "swarm", "critic_loop", "supervisor_workers", "map_reduce"]),
    name=names,
    parts=st.lists(st.one_of(agents, trees, junk), min_size=2, max_size=3),
    over=maybe(names),
    copies=junk,
    rounds=junk,
)
def test_a_shape_built_from_junk_raises_only_tethers_own_error(
    shape: str, name: Any, parts: list[Any], over: Any, copies: Any, rounds: Any
) -> None:
    try:
        if shape == "map_reduce":
            built = map_reduce(name, *parts[:2], over=over, copies=copies)
        elif shape == "critic_loop":
            built = critic_loop(name, *parts[:2], rounds=rounds)
        else:
            built = {
                "pipeline": pipeline,
                "swarm": swarm,
                "supervisor_workers": supervisor_workers,
            }[shape](name, *parts)
        Topology("t", built)
    except TopologyError as e:
        assert e.problems and all(isinstance(p, str) and ": " in p for p in e.problems)


def test_a_well_formed_tree_passes() -> None:
    leaf = Agent("a", Role("a", (Grant("noop"),)), ScriptedModel([say("-")]), ALL_TOOLS)
    team = Supervisor("team", (Agent("b", Role("b"), ScriptedModel([say("-")])),))
    topology = Topology("t", Supervisor("root", (leaf, team)))
    assert list(topology.agents()) == ["a", "b"]


def test_a_field_of_the_wrong_kind_is_named_with_the_kind_it_needs() -> None:
    grant = Grant(tool=["noop"])  # type: ignore[arg-type]
    agent = Agent("a", Role("a", (grant,)), ScriptedModel([say("-")]), ALL_TOOLS)
    with pytest.raises(TopologyError) as caught:
        Topology("t", Supervisor("root", (agent,)))
    assert "t.root.children[0].role.grants[0].tool: must be a str, got list ['noop']" in (
        caught.value.problems
    )
