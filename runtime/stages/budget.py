"""Stage 2, budget: is there a step left, along the chain of ledgers, before the agent's
time runs out, and room to start the agent that work is handed to?"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.agents.builtins import builtin
from tether.memory.events import BudgetReserved
from tether.topologies.stage import PASS, StageOutcome

from ..budget import action_key
from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class BudgetStage:
    """Reserves one step (settled by the record stage), or refuses the action."""

    name = BudgetReserved.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        gate, n = self.gate, action.number
        tool, args = action.valid
        reason = gate.deadline.passed(action.at) if gate.deadline is not None else None
        # The step is checked and held in one operation on the budget (the hold is the
        # one this action's BudgetReserved records; folding that event holds no more).
        short = gate.budget.reserve(gate.agent, action_key(n), steps=1) if reason is None else None
        if short is not None:
            reason = f"no step left on {short.ledger.name}'s budget (limit {short.ledger.limit})"
        found = builtin(tool.name)
        if reason is None and found is not None and found.spawns and gate.spawn_check:
            others = tuple(to for a, to in gate.delegated.items() if a != n)
            reason = gate.spawn_check(str(getattr(args, "to", "")), others)
            if reason is not None:
                gate.budget.release(gate.agent, action_key(n))
        if reason is not None:
            gate.journal.record(
                BudgetReserved,
                action=n,
                decision="deny",
                reason=reason,
                steps=0,
                left=gate.budget.left(gate.agent, "steps"),
            )
            return StageOutcome("deny", f"denied by budget: {reason}")
        left = gate.budget.left(gate.agent, "steps")
        gate.journal.record(
            BudgetReserved,
            action=n,
            decision="reserved",
            steps=1,
            left=left,
            reason="1 step reserved",
        )
        return PASS
