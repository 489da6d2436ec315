"""A stage a topology added (``Topology.stages``): it decides, and its decision is
recorded for it as one ``StageChecked``, which replay and the audit trail read without
its code. It may deny the action, or ask a person to approve it at a tier (the approval
stage then asks, as it does for governance)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.memory.errors import ConfigError
from tether.memory.events import StageChecked
from tether.topologies.stage import PASS, CustomStage, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class AddedStage:
    """Runs a topology's stage and records what it decided."""

    def __init__(self, stage: CustomStage, gate: Gate) -> None:
        self.stage = stage
        self.gate = gate

    @property
    def name(self) -> str:
        return self.stage.name

    async def check(self, action: ActionInFlight) -> StageOutcome:
        outcome = await self.stage.check(action)
        said = getattr(outcome, "decision", outcome)
        if not isinstance(outcome, StageOutcome) or said not in ("pass", "deny", "approval"):
            raise ConfigError(
                f"stage {self.name!r} answered {said!r}; a topology's stage returns "
                "StageOutcome('pass' | 'deny' | 'approval', reason)"
            )
        tier = (outcome.tier or "high") if said == "approval" else None
        if tier not in (None, "medium", "high"):
            raise ConfigError(
                f"stage {self.name!r} asked for approval at tier {tier!r}; ask at 'medium' "
                "(the digest) or 'high' (interrupt a person now)"
            )
        self.gate.journal.record(
            StageChecked,
            action=action.number,
            stage=self.name,
            decision=said,
            reason=outcome.reason,
            rules=list(outcome.rules),
            tier=tier,
        )
        if said == "deny":
            return StageOutcome("deny", f"denied by {self.name}: {outcome.reason}")
        if said == "approval":
            return StageOutcome("approval", outcome.reason, outcome.rules, tier)
        return PASS
