"""Stage 1, boundaries: is the action even possible? The tool's schema and the agent's
rails decide (``runtime/boundaries.py``); a resumed action is checked again before it
runs, since the world may have moved on while it waited."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.memory.events import BoundariesChecked
from tether.topologies.stage import PASS, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate

AGAIN = {"approval": "checked again after approval: ", "execution": "checked again on resume: "}
"""How the record says that a resumed action was checked again, by where it resumed."""


class BoundariesStage:
    """Schema and rails, from the one place ``BoundariesChecked`` is recorded."""

    name = BoundariesChecked.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        gate = self.gate
        # Rails decide by recorded time (rate limits): the moment the action reached them,
        # its proposal or its approval, or, resumed after a crash, the stream's last record.
        check = gate.boundaries.check(
            action.tool, action.arguments, gate.sources, gate.journal.last_at
        )
        gate.journal.record(
            BoundariesChecked,
            action=action.number,
            decision="pass" if check.passed else "deny",
            reason=AGAIN.get(action.entry, "") + check.reason,
            violations=[v.as_dict() for v in check.violations],
            provenance={name: o.as_dict() for name, o in check.provenance.items()},
        )
        if check.tool is None or check.args is None:
            return StageOutcome("deny", f"denied by boundaries: {check.reason}")
        action.rails = check
        if check.passed:
            return PASS
        if action.open.attempts > 0:
            # An attempt was under way when the run stopped: refusing to run it again does
            # not undo it. Execution finds out whether it happened; it never runs again.
            action.refused = check.reason
            return PASS
        return StageOutcome("deny", f"denied by boundaries: {check.reason}")
