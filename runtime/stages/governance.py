"""Stage 3, governance: is this agent's role allowed to do it, and at what risk? The
role's grants and the policy decide (``runtime/governance.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.memory.events import GovernanceDecided
from tether.topologies.stage import PASS, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class GovernanceStage:
    """Allows the action at its risk tier, asks for a person's approval, or denies it."""

    name = GovernanceDecided.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        tool, args = action.valid
        assert action.rails is not None
        decision = self.gate.governance.decide(tool, args, action.rails.provenance)
        self.gate.journal.record(
            GovernanceDecided,
            action=action.number,
            decision=decision.verdict,
            reason=decision.reason,
            tier=decision.tier,
            rules=list(decision.rules),
        )
        action.tier = decision.tier
        if decision.verdict == "deny":
            return StageOutcome("deny", f"denied by governance: {decision.reason}")
        if decision.verdict == "approval":
            return StageOutcome("approval", decision.reason, decision.rules, decision.tier)
        return PASS
