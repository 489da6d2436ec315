"""Budgets: reserved before an action or a model call runs, settled after, along the chain.

A ledger counts one unit (steps, model tokens, cost in nano-dollars) for an agent or a
supervisor; an agent's ledger points to its supervisor's, so a reservation holds only if
every ledger up the chain has room. Ledgers are folded from recorded events
(``BudgetReserved`` and ``BudgetSettled`` for steps, ``ModelResponded`` for tokens and
cost), so a rebuilt agent can never spend its budget twice, and a restart, a resume or a
fork never resets what was spent.

Time to live is a deadline computed from recorded times (``deadline``): the supervisor
gives each run of an agent the earliest of its own and its supervisor's, and the agent
checks it against the times of the events it records, so re-execution decides the same.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from tether.agents.model import Price
from tether.memory.events import (
    BudgetGranted,
    EpisodeEscalated,
    EpisodeResumed,
    EpisodeSuspended,
    Event,
    ModelResponded,
)


class Ledger:
    """What one agent or supervisor may still spend of one unit."""

    def __init__(self, name: str, limit: int | None, parent: Ledger | None = None) -> None:
        self.name = name
        self.limit = limit
        self.parent = parent
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

    def can_reserve(self, amount: int) -> Ledger | None:
        """None if every ledger up the chain has ``amount`` left, else the first that has not."""
        for ledger in self.chain():
            left = ledger.left()
            if left is not None and left < amount:
                return ledger
        return None

    def reserve(self, amount: int) -> None:
        """Hold ``amount`` on every ledger of the chain (call after ``can_reserve``)."""
        for ledger in self.chain():
            ledger.reserved += amount

    def settle(self, used: int, released: int) -> None:
        """Turn a reservation into use, or give it back."""
        for ledger in self.chain():
            ledger.reserved -= used + released
            ledger.used += used

    def left_by_ledger(self) -> dict[str, int | None]:
        """What is left on each ledger of the chain, by name."""
        return {ledger.name: ledger.left() for ledger in self.chain()}


class Meter:
    """One model-call unit (tokens, or cost in nano-dollars) for one agent: each call first
    reserves what its prompt alone will take; what it used is counted from the recorded
    ``ModelResponded``."""

    def __init__(
        self,
        ledger: Ledger,
        used: Callable[[ModelResponded], int],
        estimate: Callable[[int], int],
        unit: str,
        shown: Callable[[int | None], str] = str,
    ) -> None:
        self.ledger = ledger
        self.used = used
        """What one recorded turn used, in the ledger's unit."""
        self.estimate = estimate
        """What a call with this many tokens of context will take at least."""
        self.unit = unit
        self.shown = shown
        """An amount of the unit for people."""

    def observe(self, event: Event) -> None:
        if isinstance(event, ModelResponded):
            used = self.used(event)
            for ledger in self.ledger.chain():
                ledger.used += used

    def reserve(self, tokens: int) -> str | None:
        """Hold what a call with ``tokens`` of context needs; or why it cannot be held."""
        amount = self.estimate(tokens)
        short = self.ledger.can_reserve(amount)
        if short is not None:
            return (
                f"{self.unit} budget of {short.name} exhausted: {self.shown(short.left())} of "
                f"{self.shown(short.limit)} left, the next model call needs about "
                f"{self.shown(amount)}"
            )
        self.ledger.reserve(amount)
        return None

    def release(self, tokens: int) -> None:
        """Give back a reservation (the call's use is counted from its event)."""
        amount = self.estimate(tokens)
        for ledger in self.ledger.chain():
            ledger.reserved -= amount


class TokenMeter(Meter):
    """Model tokens, as the model reports them."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger, lambda e: sum(e.usage.values()), lambda n: n, "token")


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


class CostMeter(Meter):
    """Model spend, priced from the usage each turn recorded."""

    def __init__(self, ledger: Ledger, price: Price | None) -> None:
        super().__init__(
            ledger,
            lambda e: nanos(e.cost) if e.cost is not None else 0,
            lambda n: nanos(price.estimate(n)) if price is not None else 0,
            "cost",
            dollars,
        )


class Meters:
    """Several meters reserved together: all hold, or none does."""

    def __init__(self, *meters: Meter) -> None:
        self.meters = meters

    def observe(self, event: Event) -> None:
        for meter in self.meters:
            meter.observe(event)

    def reserve(self, tokens: int) -> str | None:
        held: list[Meter] = []
        for meter in self.meters:
            short = meter.reserve(tokens)
            if short is not None:
                for h in held:
                    h.release(tokens)
                return short
            held.append(meter)
        return None

    def release(self, tokens: int) -> None:
        for meter in self.meters:
            meter.release(tokens)


@dataclass(frozen=True)
class Extra:
    """What people granted one agent on escalations, on top of its budget."""

    steps: int = 0
    tokens: int = 0
    cost: int = 0
    """In nano-dollars."""
    seconds: float = 0.0


def granted(episode: list[Event]) -> dict[str, Extra]:
    """Per agent, the sum of the ``BudgetGranted`` events of an episode's stream."""
    out: dict[str, Extra] = {}
    for e in episode:
        if isinstance(e, BudgetGranted):
            x = out.get(e.agent, Extra())
            out[e.agent] = Extra(
                x.steps + e.steps,
                x.tokens + e.tokens,
                x.cost + nanos(e.cost),
                x.seconds + e.seconds,
            )
    return out


def total(extras: dict[str, Extra], under: Collection[str] | None = None) -> Extra:
    """What was granted to the agents ``under`` a supervisor (None: all of them): what
    that supervisor got on top of its budget."""
    chosen = [x for a, x in extras.items() if under is None or a in under]
    return Extra(
        sum(x.steps for x in chosen),
        sum(x.tokens for x in chosen),
        sum(x.cost for x in chosen),
        sum(x.seconds for x in chosen),
    )


def plus(limit: int | None, extra: int) -> int | None:
    """A limit raised by ``extra``; no limit stays no limit."""
    return None if limit is None else limit + extra


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


def waits(episode: list[Event]) -> list[tuple[datetime, datetime | None]]:
    """The spans an episode waited for a person: from its suspension or escalation to the
    resume that followed (None while it still waits)."""
    out: list[tuple[datetime, datetime | None]] = []
    for e in episode:
        if isinstance(e, EpisodeSuspended | EpisodeEscalated):
            out.append((e.at, None))
        elif isinstance(e, EpisodeResumed) and out and out[-1][1] is None:
            out[-1] = (out[-1][0], e.at)
    return out


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
