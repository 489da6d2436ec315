"""Stage 4, approval: an action a stage asked a person about waits in the inbox until
the person decides (or the deadline passes); any other goes on, approved by its tier."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tether.memory.events import ApprovalAwaited, ApprovalSettled
from tether.topologies.stage import PASS, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class ApprovalStage:
    """Asks a person (a durable inbox item, written with the action's events), and on a
    resume carries out what they decided."""

    name = ApprovalSettled.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        gate, n = self.gate, action.number
        if action.open.approval_id is not None and not action.open.cleared:
            return self._decided(action, action.open.approval_id)
        asked = action.asked
        if asked is None:
            gate.journal.record(
                ApprovalSettled,
                action=n,
                decision="auto",
                reason=f"tier {action.tier} needs no person",
            )
            return PASS
        approval_id = gate.ids.new()
        gate.journal.record(
            ApprovalAwaited,
            action=n,
            decision="waiting",
            approval_id=approval_id,
            tier=asked.tier,
            reason=f"waiting for a person: {asked.reason}",
        )
        request = gate.inbox.request(
            approval_id,
            gate.approvals.deadline(asked.tier),
            episode_id=gate.episode_id,
            agent=gate.agent,
            action=n,
            tool=action.tool,
            arguments=action.arguments,
            tier=asked.tier,
            rules=list(asked.rules),
            reason=asked.reason,
            subject=gate.journal.subject,
        )
        gate.journal.flush(request)  # in the inbox exactly when the agent waits for it
        gate.inbox.opened(request)
        return StageOutcome(
            "wait", f"waiting for approval {approval_id}", waiting_for=str(approval_id)
        )

    def _decided(self, action: ActionInFlight, approval_id: uuid.UUID) -> StageOutcome:
        """The person's decision, once they have taken it."""
        item = self.gate.inbox.get(approval_id)
        if item.status == "pending":
            return StageOutcome("wait", f"waiting for approval {item.id}", waiting_for=str(item.id))
        timed_out = item.status == "timed_out"
        who = (
            str(item.reason)
            if timed_out
            else f"{item.status} by {item.approver}: {item.reason or 'no reason given'}"
        )
        self.gate.journal.record(
            ApprovalSettled,
            action=action.number,
            decision=item.status,
            reason=who,
            approval_id=item.id,
            approver=item.approver,
        )
        if item.status != "granted":
            return StageOutcome("deny", f"{'timed out' if timed_out else 'denied'}: {who}")
        return PASS
