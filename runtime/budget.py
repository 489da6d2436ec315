"""Budgets: one fold of an episode's budget events, read by every part that needs one.

``BudgetFold`` holds, for each agent and supervisor of an episode, a ledger per unit
(steps, model tokens, cost in nano-dollars, agents started) and its time to live. It is
folded from recorded events: ``BudgetReserved`` and ``BudgetSettled`` (steps),
``ModelResponded`` (tokens and cost), an agent's first ``TaskAssigned`` (one start on
every supervisor above it), ``BudgetGranted`` (what people added), and the episode's
waits for a person (time). An agent's use counts on every ledger up its chain of
supervisors, so a reservation holds only if every one has room. The gate, the host (its
own agents and those on other hosts), ``tether status`` and re-execution all fold
through it, so a rebuilt agent never spends its budget twice, and a restart, a resume or
a fork never resets what was spent.

Reservations are explicit operations on the fold's state, each under a key (one per
action, one for the model call in flight): ``reserve`` checks every ledger and holds in
one step, ``settle`` turns a hold into use, ``release`` gives it back. Folding the event
of a reservation already held changes nothing, so the check-and-hold can move into the
store (one transaction) without the fold counting it twice.

Time to live is a deadline computed from recorded times: an agent's counts from its
first task, a supervisor's from the episode's start (a nested one's from the first task
under it), and the waits for a person do not count; the agent checks it against the
times of the events it records, so re-execution decides the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal

from tether.agents.model import Price
from tether.memory.events import (
    AgentRestarted,
    BudgetGranted,
    BudgetReserved,
    BudgetSettled,
    EpisodeEscalated,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeSuspended,
    Event,
    ModelResponded,
    TaskAssigned,
    agent_stream_id,
)
from tether.topologies.spec import Budget
from tether.topologies.topology import Topology

Unit = Literal["steps", "tokens", "cost", "spawns"]
UNITS: tuple[Unit, ...] = ("steps", "tokens", "cost", "spawns")
"""What a ledger counts: governed actions, model tokens, model spend in nano-dollars,
and (a supervisor's) agents started under it."""

MODEL_CALL = "model call"
"""The key of the hold a model call in flight takes on tokens and cost."""

NANO = Decimal(1_000_000_000)
"""Cost is counted in nano-dollars, so ledgers hold exact integers."""


def nanos(dollars: Decimal | int | str) -> int:
    """Dollars as whole nano-dollars, rounded up (a budget never rounds spend away)."""
    return int((Decimal(dollars) * NANO).to_integral_value(rounding=ROUND_CEILING))


def dollars(amount: int | None) -> str:
    """Nano-dollars for people: ``$0.000120``; None = no limit."""
    if amount is None:
        return "no limit"
    return f"{'-' if amount < 0 else ''}${Decimal(abs(amount)) / NANO:.6f}"


def action_key(action: int) -> str:
    """The key of the step an action reserves."""
    return f"action {action}"


class Ledger:
    """One unit of one agent or supervisor: its limit (with what people granted), what
    was used, and what open reservations hold. Only the fold changes it."""

    def __init__(self, name: str, limit: int | None, parent: Ledger | None = None) -> None:
        self.name = name
        self.limit = limit
        """None = no limit."""
        self.parent = parent
        """The same unit of the supervisor above (None: the root, or no supervisor)."""
        self.used = 0
        self.reserved = 0

    def left(self) -> int | None:
        """Neither used nor reserved; None = no limit."""
        if self.limit is None:
            return None
        return self.limit - self.used - self.reserved

    def chain(self) -> list[Ledger]:
        """This ledger and every ledger above it."""
        out: list[Ledger] = []
        ledger: Ledger | None = self
        while ledger is not None:
            out.append(ledger)
            ledger = ledger.parent
        return out


@dataclass(frozen=True)
class Limits:
    """What one agent or supervisor may spend, before grants; None = no limit."""

    steps: int | None = None
    tokens: int | None = None
    cost: int | None = None
    """In nano-dollars."""
    spawns: int | None = None
    ttl_s: float | None = None

    @classmethod
    def of(cls, budget: Budget) -> Limits:
        """A topology's budget, with cost in nano-dollars."""
        cost = None if budget.cost is None else nanos(budget.cost)
        return cls(budget.steps, budget.tokens, cost, budget.spawns, budget.ttl_s)


@dataclass(frozen=True)
class Short:
    """Why a reservation cannot be held: the first ledger without room for ``amount``."""

    unit: Unit
    ledger: Ledger
    amount: int


@dataclass
class _Node:
    """One agent or supervisor of the fold."""

    name: str
    parent: _Node | None
    ledgers: dict[Unit, Ledger]
    ttl_s: float | None
    """Its time to live with what people granted; None = none of its own."""
    agents: frozenset[str] = frozenset()
    """For a supervisor, the agents under it (for an agent, none)."""


class BudgetFold:
    """What an episode's agents and supervisors spent and may still spend, folded from
    its events (the episode's own stream and its agents')."""

    def __init__(self, episode_id: uuid.UUID) -> None:
        self.episode_id = episode_id
        self.nodes: dict[str, _Node] = {}
        self.root: str | None = None
        """The top supervisor (None until one is added)."""
        self.streams: dict[uuid.UUID, str] = {}
        """Each agent's stream, to its agent."""
        self.started: dict[str, datetime] = {}
        """When each agent was first given a task."""
        self.began: datetime | None = None
        """When the episode started: the root's time to live counts from there."""
        self.waits: list[tuple[datetime, datetime | None]] = []
        """The spans the episode waited for a person (None: it still waits)."""
        self.held: dict[tuple[str, str], dict[Unit, int]] = {}
        """Open reservations, by (agent, key)."""
        self._chains: dict[tuple[str, Unit], list[Ledger]] = {}

    @classmethod
    def of(cls, topology: Topology | None, episode_id: uuid.UUID) -> BudgetFold:
        """The fold for an episode of ``topology`` (None: one whose topology is unknown;
        add its agents, with no limits)."""
        fold = cls(episode_id)
        if topology is None:
            return fold
        for sup in topology.supervisors().values():  # (parents before children)
            above = topology.chain(sup.name)
            fold.add(
                sup.name,
                Limits.of(sup.budget),
                above[0].name if above else None,
                topology.under(sup.name),
            )
        for name, agent in topology.agents().items():
            fold.add(name, Limits.of(agent.budget), topology.chain(name)[0].name)
        return fold

    def add(
        self,
        name: str,
        limits: Limits,
        parent: str | None = None,
        agents: Iterable[str] | None = None,
    ) -> None:
        """Add an agent, or (with the ``agents`` under it) a supervisor, below ``parent``
        (added before it)."""
        above = self.nodes[parent] if parent is not None else None
        ledgers: dict[Unit, Ledger] = {
            unit: Ledger(name, getattr(limits, unit), above.ledgers[unit] if above else None)
            for unit in UNITS
        }
        self.nodes[name] = _Node(
            name,
            above,
            ledgers,
            limits.ttl_s,
            frozenset(agents) if agents is not None else frozenset(),
        )
        if agents is None:
            self.streams[agent_stream_id(self.episode_id, name)] = name
        elif above is None:
            self.root = name

    # --- reads ------------------------------------------------------------------------

    def ledger(self, name: str, unit: Unit) -> Ledger:
        """One agent's or supervisor's ledger of ``unit``."""
        return self.nodes[name].ledgers[unit]

    def chain(self, agent: str, unit: Unit) -> list[Ledger]:
        """The ledgers an agent's use of ``unit`` counts on: its own, then each
        supervisor's up to the root (for ``spawns``, only the supervisors': an agent
        starts under them, not under itself)."""
        found = self._chains.get((agent, unit))
        if found is None:
            mine = self.nodes[agent].ledgers[unit]
            start = mine.parent if unit == "spawns" else mine
            found = self._chains[(agent, unit)] = start.chain() if start is not None else []
        return found

    def short(self, agent: str, **amounts: int) -> Short | None:
        """None if every ledger above ``agent`` has room for each amount (by unit, in
        order), else the first that has not."""
        for unit, amount in amounts.items():
            u = _unit(unit)
            for ledger in self.chain(agent, u):
                left = ledger.left()
                if left is not None and left < amount:
                    return Short(u, ledger, amount)
        return None

    def left(self, agent: str, unit: Unit) -> dict[str, int | None]:
        """What is left of ``unit`` on each ledger above ``agent``, by name (its own first)."""
        return {ledger.name: ledger.left() for ledger in self.chain(agent, unit)}

    def deadline(self, agent: str) -> Deadline | None:
        """The earliest of the agent's deadline and its supervisors' (None: no time to
        live, or its clock has not started)."""
        found: list[Deadline] = []
        node = self.nodes[agent].parent
        while node is not None:
            start = self._start(node.name)
            if node.ttl_s is not None and start is not None:
                at = deadline(start, node.ttl_s, self.waits)
                found.append(Deadline(at, f"supervisor {node.name}", node.ttl_s))
            node = node.parent
        mine, started = self.nodes[agent].ttl_s, self.started.get(agent)
        if mine is not None and started is not None:
            found.append(Deadline(deadline(started, mine, self.waits), f"agent {agent}", mine))
        return first_deadline(*found)

    def time_left(self, name: str, until: datetime) -> float | None:
        """Seconds of active time an agent or supervisor has left of its own time to live
        at ``until`` (a clock not started yet counts from ``until``); None = none."""
        ttl = self.nodes[name].ttl_s
        if ttl is None:
            return None
        start = self._start(name) or until
        return ttl - active_seconds(start, self.waits, until)

    def _start(self, name: str) -> datetime | None:
        """When a time to live starts: an agent's first task; the root's episode start;
        a nested supervisor's first task of an agent under it."""
        node = self.nodes[name]
        if name == self.root:
            return self.began
        if node.agents:
            return min((self.started[a] for a in node.agents if a in self.started), default=None)
        return self.started.get(name)

    # --- operations on the state ------------------------------------------------------

    def reserve(self, agent: str, key: str, **amounts: int) -> Short | None:
        """Check every ledger above ``agent`` and hold ``amounts`` under ``key``, in one
        step: all hold, or none (and what is short is returned). A key already held
        holds nothing more."""
        if (agent, key) in self.held:
            return None
        short = self.short(agent, **amounts)
        if short is None:
            self.hold(agent, key, **amounts)
        return short

    def hold(self, agent: str, key: str, **amounts: int) -> None:
        """Hold ``amounts`` under ``key`` without checking (what a recorded reservation
        held); a key already held holds nothing more."""
        if (agent, key) in self.held:
            return
        held = self.held[(agent, key)] = {_unit(u): a for u, a in amounts.items()}
        for unit, amount in held.items():
            for ledger in self.chain(agent, unit):
                ledger.reserved += amount

    def release(self, agent: str, key: str) -> None:
        """Give back what ``key`` holds (nothing held: nothing happens)."""
        self.settle(agent, key)

    def settle(self, agent: str, key: str, **used: int) -> None:
        """Turn what ``key`` holds into ``used`` (at most what it held, by unit), and
        give back the rest."""
        held = self.held.pop((agent, key), {})
        for unit, amount in held.items():
            spent = max(0, min(used.get(unit, 0), amount))
            for ledger in self.chain(agent, unit):
                ledger.reserved -= amount
                ledger.used += spent

    def spend(self, agent: str, **used: int) -> None:
        """Count use that was not reserved (what a model call reported)."""
        for unit, amount in used.items():
            for ledger in self.chain(agent, _unit(unit)):
                ledger.used += amount

    def grant(self, agent: str, *, seconds: float = 0.0, **more: int) -> None:
        """Raise the agent's limits, and those of every supervisor above it (no limit
        stays no limit)."""
        for unit, amount in more.items():
            for ledger in self.chain(agent, _unit(unit)):
                if ledger.limit is not None:
                    ledger.limit += amount
        node: _Node | None = self.nodes[agent]
        while node is not None:
            if node.ttl_s is not None:
                node.ttl_s += seconds
            node = node.parent

    # --- the fold ---------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event of the episode's stream or of one of its agents' streams (any
        other event changes nothing)."""
        agent = self.streams.get(event.originator_id)
        if agent is not None:
            self._agent_event(agent, event)
        elif event.originator_id == self.episode_id:
            self._episode_event(event)

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def _agent_event(self, agent: str, e: Event) -> None:
        if isinstance(e, BudgetReserved):
            if e.steps:
                self.hold(agent, action_key(e.action), steps=e.steps)
        elif isinstance(e, BudgetSettled):
            self.settle(agent, action_key(e.action), steps=e.used)
        elif isinstance(e, ModelResponded):
            cost = nanos(e.cost) if e.cost is not None else 0
            self.spend(agent, tokens=sum(e.usage.values()), cost=cost)
        elif isinstance(e, TaskAssigned) and agent not in self.started:
            # Its first task starts it: one start on every supervisor above it.
            self.started[agent] = e.at
            self.spend(agent, spawns=1)

    def _episode_event(self, e: Event) -> None:
        if isinstance(e, EpisodeStarted):
            self.began = e.at
        elif isinstance(e, BudgetGranted):
            if e.agent in self.nodes:
                self.grant(
                    e.agent, steps=e.steps, tokens=e.tokens, cost=nanos(e.cost), seconds=e.seconds
                )
        elif isinstance(e, EpisodeSuspended | EpisodeEscalated):
            self.waits.append((e.at, None))
        elif isinstance(e, EpisodeResumed) and self.waits and self.waits[-1][1] is None:
            self.waits[-1] = (self.waits[-1][0], e.at)
        elif isinstance(e, AgentRestarted):
            pass  # a restart gives an agent a fresh working memory, never fresh budget


def _unit(name: str) -> Unit:
    if name not in UNITS:
        raise ValueError(f"{name!r} is not a budget unit (one of {', '.join(UNITS)})")
    return name


class ModelBudget:
    """One agent's model calls against the fold: each call first reserves the tokens and
    cost its prompt alone will take; what it used is folded from its ``ModelResponded``."""

    def __init__(self, fold: BudgetFold, agent: str, price: Price | None) -> None:
        self.fold = fold
        self.agent = agent
        self.price = price

    def reserve(self, tokens: int) -> str | None:
        """Hold what a call with ``tokens`` of context needs; or why it cannot be held."""
        cost = nanos(self.price.estimate(tokens)) if self.price is not None else 0
        short = self.fold.reserve(self.agent, MODEL_CALL, tokens=tokens, cost=cost)
        if short is None:
            return None
        unit, shown = ("token", str) if short.unit == "tokens" else ("cost", dollars)
        ledger = short.ledger
        return (
            f"{unit} budget of {ledger.name} exhausted: {shown(ledger.left())} of "
            f"{shown(ledger.limit)} left, the next model call needs about {shown(short.amount)}"
        )

    def release(self, tokens: int) -> None:
        """Give back the call's hold (its use is counted from its event)."""
        self.fold.release(self.agent, MODEL_CALL)


# --- time to live ---------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """When an agent's time runs out, in wall-clock time for the run it is given to; and
    whose time to live sets it (the agent's own, or a supervisor's)."""

    at: datetime
    """The deadline."""
    whose: str
    """``agent NAME`` or ``supervisor NAME``."""
    ttl_s: float
    """That time to live, in seconds (with what people granted)."""

    def passed(self, at: datetime) -> str | None:
        """Why the agent's time is up at the recorded time ``at``; None while it is not."""
        if at < self.at:
            return None
        return (
            f"time to live of {self.whose} ({self.ttl_s:g} s of active time) "
            f"passed {(at - self.at).total_seconds():.3f} s ago"
        )


def deadline(
    start: datetime, ttl_s: float, spans: list[tuple[datetime, datetime | None]]
) -> datetime:
    """The wall-clock time at which ``ttl_s`` seconds of active time since ``start`` are
    spent, when the waits that ended after ``start`` do not count."""
    paused = timedelta()
    for begin, end in spans:
        if end is not None and end > start:
            paused += end - max(begin, start)
    return start + timedelta(seconds=ttl_s) + paused


def active_seconds(
    start: datetime, spans: list[tuple[datetime, datetime | None]], until: datetime
) -> float:
    """Seconds of active time from ``start`` to ``until``: the waits do not count (one
    still open counts as waiting up to ``until``)."""
    paused = timedelta()
    for begin, end in spans:
        b, e = max(begin, start), min(end or until, until)
        if e > b:
            paused += e - b
    return max(0.0, (until - start - paused).total_seconds())


def first_deadline(*found: Deadline | None) -> Deadline | None:
    """The earliest of the deadlines that exist."""
    present = [d for d in found if d is not None]
    return min(present, key=lambda d: d.at) if present else None
