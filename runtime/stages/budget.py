"""Stage 2, budget: is there a step left, along the chain of ledgers, before the agent's
time runs out, and room to start the agent that work is handed to?"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.agents.tools import DELEGATE, HANDOFF
from tether.memory.events import BudgetReserved
from tether.topologies.stage import PASS, StageOutcome

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
        short = gate.ledger.can_reserve(1)
        if reason is None and short is not None:
            reason = f"no step left on {short.name}'s budget (limit {short.limit})"
        if reason is None and tool.name in (HANDOFF, DELEGATE) and gate.spawn_check is not None:
            others = tuple(to for a, to in gate.delegated.items() if a != n)
            reason = gate.spawn_check(str(getattr(args, "to", "")), others)
        if reason is not None:
            gate.journal.record(
                BudgetReserved,
                action=n,
                decision="deny",
                reason=reason,
                steps=0,
                left=gate.ledger.left_by_ledger(),
            )
            return StageOutcome("deny", f"denied by budget: {reason}")
        left = {
            name: None if steps is None else steps - 1
            for name, steps in gate.ledger.left_by_ledger().items()
        }
        gate.journal.record(
            BudgetReserved,
            action=n,
            decision="reserved",
            steps=1,
            left=left,
            reason="1 step reserved",
        )
        return PASS
