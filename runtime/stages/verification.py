"""Stage 6, verification: the tool's post-condition checks its result before anything
builds on it; a failed check fails the action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.memory.events import NO_POST_CONDITION, ActionVerified
from tether.topologies.stage import PASS, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class VerificationStage:
    """Records ``pass`` or ``fail``, or ``skipped`` when there is nothing to check: a
    tool without a post-condition, or a person's word instead of a result."""

    name = ActionVerified.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        journal, n = self.gate.journal, action.number
        tool, args = action.valid
        assert action.done is not None and action.done.result is not None
        if action.unchecked is not None:
            # A person's word that the effect happened: there is no result to check, and
            # nothing builds on it.
            journal.record(
                ActionVerified,
                action=n,
                decision="skipped",
                reason=f"not checked: {action.unchecked}",
            )
            return PASS
        if tool.verify is None:
            journal.record(ActionVerified, action=n, decision="skipped", reason=NO_POST_CONDITION)
            action.delivers = True
            return PASS
        failure = tool.verify(args, action.done.result)
        if failure is not None:
            journal.record(ActionVerified, action=n, decision="fail", reason=failure)
            return StageOutcome("fail", f"the result failed verification: {failure}")
        journal.record(ActionVerified, action=n, decision="pass", reason="post-condition held")
        action.delivers = True
        return PASS
