"""The budget fold, fed random histories: whatever order budget events come in, spending
is never negative, a step is used only out of a reservation, grants only raise limits,
and nothing (a restart least of all) gives back what was spent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.memory.events import (
    AgentRestarted,
    BudgetGranted,
    BudgetReserved,
    BudgetSettled,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeSuspended,
    Event,
    ModelResponded,
    TaskAssigned,
    agent_stream_id,
)
from tether.runtime.budget import BudgetFold, Limits, action_key

EPISODE = uuid.UUID(int=7)
AGENTS = ("a", "b", "c")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def tree() -> BudgetFold:
    """root (10 steps, 3 starts, 60 s) over team (4 steps, 1 start) over a and b; c
    directly under root with 2 steps and no other limit."""
    fold = BudgetFold(EPISODE)
    fold.add("root", Limits(steps=10, tokens=500, cost=5_000, spawns=3, ttl_s=60), None, AGENTS)
    fold.add("team", Limits(steps=4, spawns=1, ttl_s=30), "root", ("a", "b"))
    fold.add("a", Limits(steps=3, tokens=200, ttl_s=10), "team")
    fold.add("b", Limits(), "team")
    fold.add("c", Limits(steps=2), "root")
    return fold


@dataclass
class Op:
    """One thing that happens to the fold: an event folded, or an operation on it."""

    kind: str
    agent: str
    n: int = 0
    m: int = 0

    def __call__(self, fold: BudgetFold, at: datetime, version: int) -> None:
        stream = agent_stream_id(EPISODE, self.agent)

        def event(cls: type[Event], on: uuid.UUID = stream, **fields: Any) -> None:
            fold.apply(cls(originator_id=on, originator_version=version, at=at, **fields))

        if self.kind == "task":
            event(TaskAssigned, episode_id=EPISODE, agent=self.agent, task={}, by="operator")
        elif self.kind == "reserved":
            event(
                BudgetReserved,
                action=self.n,
                decision="reserved",
                reason="1 step reserved",
                steps=1,
                left={},
            )
        elif self.kind == "settled":
            # (m above 1, or a settle of nothing held: a history no gate records)
            used = self.m
            event(
                BudgetSettled,
                action=self.n,
                decision="settled",
                reason="",
                used=used,
                released=max(0, 1 - used),
            )
        elif self.kind == "responded":
            usage = {"input_tokens": self.n, "output_tokens": self.m}
            cost = str(Decimal("0.00000000075") * self.n)  # (sub-nano amounts round up)
            event(ModelResponded, turn=0, text="", tool_calls=[], usage=usage, cost=cost)
        elif self.kind == "granted":
            event(
                BudgetGranted,
                EPISODE,
                agent=self.agent,
                steps=self.n,
                tokens=self.m,
                cost="0.000001",
                seconds=float(self.n),
                by="alice",
            )
        elif self.kind == "restarted":
            event(
                AgentRestarted,
                EPISODE,
                agent=self.agent,
                failed=self.agent,
                reason="crashed",
                restart=1,
                strategy="one_for_one",
            )
        elif self.kind == "suspended":
            event(EpisodeSuspended, EPISODE, waiting=[], agent=self.agent)
        elif self.kind == "resumed":
            event(EpisodeResumed, EPISODE, agent=self.agent)
        elif self.kind == "reserve":  # the gate's check-and-hold
            fold.reserve(self.agent, action_key(self.n), steps=1)
        elif self.kind == "release":
            fold.release(self.agent, action_key(self.n))
        elif self.kind == "model call":  # a model call's hold, given back after the call
            if fold.reserve(self.agent, "model call", tokens=self.n, cost=self.m) is None:
                fold.release(self.agent, "model call")


ops = st.builds(
    Op,
    st.sampled_from(
        [
            "task",
            "reserved",
            "settled",
            "responded",
            "granted",
            "restarted",
            "suspended",
            "resumed",
            "reserve",
            "release",
            "model call",
        ]
    ),
    st.sampled_from(AGENTS),
    st.integers(0, 6),
    st.integers(0, 3),
)


def snapshot(fold: BudgetFold) -> dict[tuple[str, str], tuple[int | None, int, int]]:
    """Every ledger's (limit, used, reserved)."""
    return {
        (name, unit): (ledger.limit, ledger.used, ledger.reserved)
        for name, node in fold.nodes.items()
        for unit, ledger in node.ledgers.items()
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40))
def test_random_histories_keep_the_invariants(history: list[Op]) -> None:
    fold = tree()
    fold.apply(
        EpisodeStarted(
            originator_id=EPISODE,
            originator_version=1,
            at=T0,
            topology="t",
            source={},
            agents=list(AGENTS),
            entry="a",
            input={},
            context={},
        )
    )
    started: dict[str, datetime] = {}
    for i, op in enumerate(history):
        before = snapshot(fold)
        ttl_before = {name: node.ttl_s for name, node in fold.nodes.items()}
        op(fold, T0 + timedelta(seconds=i), i + 2)
        after = snapshot(fold)
        for key, (limit, used, reserved) in after.items():
            old_limit, old_used, old_reserved = before[key]
            # Never negative: nothing is used or held below zero.
            assert used >= 0 and reserved >= 0, (key, op)
            # Nothing gives spending back, a restart least of all.
            assert used >= old_used, (key, op)
            # Limits only rise (no limit stays no limit).
            assert (limit is None) == (old_limit is None), (key, op)
            assert limit is None or old_limit is None or limit >= old_limit, (key, op)
            # A step is used only out of what a reservation held.
            if key[1] == "steps":
                assert used - old_used <= max(0, old_reserved - reserved), (key, op)
        for name, node in fold.nodes.items():
            old = ttl_before[name]
            assert (node.ttl_s is None) == (old is None)
            assert node.ttl_s is None or old is None or node.ttl_s >= old
        # An agent's first task starts it, once: later tasks and restarts do not.
        for agent, at in started.items():
            assert fold.started[agent] == at
        started = dict(fold.started)
        assert fold.ledger("root", "spawns").used == len(fold.started)
        if op.kind == "granted":
            # A grant raises the limits of the agent and of every supervisor above it.
            for ledger in fold.chain(op.agent, "steps"):
                was = before[(ledger.name, "steps")][0]
                assert ledger.limit == (None if was is None else was + op.n)
        if op.kind == "restarted":
            assert after == before  # spending, holds and limits all stay


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(AGENTS), st.integers(0, 8)), max_size=30))
def test_a_reservation_is_checked_and_held_in_one_step(asks: list[tuple[str, int]]) -> None:
    fold = tree()
    for agent, action in asks:
        key = action_key(action)
        held = (agent, key) in fold.held
        before = snapshot(fold)
        short = fold.reserve(agent, key, steps=1)
        if held:
            # Taken already (by a twin call, or by folding its event): nothing more.
            assert short is None and snapshot(fold) == before
            continue
        if short is not None:
            # Refused: the ledger named has no step left, and nothing was held anywhere.
            left = short.ledger.left()
            assert left is not None and left < 1
            assert (agent, key) not in fold.held and snapshot(fold) == before
            continue
        # Held: no ledger went past its limit.
        for ledger in fold.chain(agent, "steps"):
            left = ledger.left()
            assert left is None or left >= 0
        # Folding the event that records the reservation holds nothing more.
        taken = snapshot(fold)
        fold.apply(
            BudgetReserved(
                originator_id=agent_stream_id(EPISODE, agent),
                originator_version=1,
                at=T0,
                action=action,
                decision="reserved",
                reason="1 step reserved",
                steps=1,
                left={},
            )
        )
        assert snapshot(fold) == taken
