"""Gate stage 2, budget: reserved before an action runs, settled after, along the chain.

A ledger belongs to an agent or a supervisor; an agent's ledger points to its
supervisor's, so a reservation holds only if every ledger up the chain has room. Ledgers
are folded from recorded events (``BudgetReserved``, ``BudgetSettled``), so a rebuilt
agent can never spend its budget twice.
"""

from __future__ import annotations


class StepLedger:
    """Steps (governed actions) one agent or supervisor may still take."""

    def __init__(self, name: str, limit: int | None, parent: StepLedger | None = None) -> None:
        self.name = name
        self.limit = limit
        self.parent = parent
        self.used = 0
        self.reserved = 0

    def left(self) -> int | None:
        """Steps neither used nor reserved; None = no limit."""
        if self.limit is None:
            return None
        return self.limit - self.used - self.reserved

    def chain(self) -> list[StepLedger]:
        """This ledger and every ledger above it."""
        out: list[StepLedger] = []
        ledger: StepLedger | None = self
        while ledger is not None:
            out.append(ledger)
            ledger = ledger.parent
        return out

    def can_reserve(self, steps: int) -> StepLedger | None:
        """None if every ledger up the chain has ``steps`` left, else the first that has not."""
        for ledger in self.chain():
            left = ledger.left()
            if left is not None and left < steps:
                return ledger
        return None

    def reserve(self, steps: int) -> None:
        """Hold ``steps`` on every ledger of the chain (call after ``can_reserve``)."""
        for ledger in self.chain():
            ledger.reserved += steps

    def settle(self, used: int, released: int) -> None:
        """Turn a reservation into use, or give it back."""
        for ledger in self.chain():
            ledger.reserved -= used + released
            ledger.used += used

    def left_by_ledger(self) -> dict[str, int | None]:
        """Steps left on each ledger of the chain, by name."""
        return {ledger.name: ledger.left() for ledger in self.chain()}
