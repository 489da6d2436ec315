"""Budgets: reserved before an action or a model call runs, settled after, along the chain.

A ledger counts one unit (steps, model tokens) for an agent or a supervisor; an agent's
ledger points to its supervisor's, so a reservation holds only if every ledger up the
chain has room. Ledgers are folded from recorded events (``BudgetReserved`` and
``BudgetSettled`` for steps, ``ModelResponded`` for tokens), so a rebuilt agent can never
spend its budget twice, and a restart, a resume or a fork never resets what was spent.
"""

from __future__ import annotations

from tether.memory.events import Event, ModelResponded


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


class TokenMeter:
    """Model tokens for one agent: each call reserves its context's estimate first; what
    the model reports using is counted from the recorded ``ModelResponded``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def observe(self, event: Event) -> None:
        if isinstance(event, ModelResponded):
            used = sum(event.usage.values())
            for ledger in self.ledger.chain():
                ledger.used += used

    def reserve(self, tokens: int) -> str | None:
        """Hold ``tokens``; or why they cannot be held."""
        short = self.ledger.can_reserve(tokens)
        if short is not None:
            return (
                f"token budget of {short.name} exhausted: {short.left()} of {short.limit} "
                f"left, the next model call needs about {tokens}"
            )
        self.ledger.reserve(tokens)
        return None

    def release(self, tokens: int) -> None:
        """Give back a reservation (the call's use is counted from its event)."""
        for ledger in self.ledger.chain():
            ledger.reserved -= tokens
