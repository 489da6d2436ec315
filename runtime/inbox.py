"""Gate stage 4, approval: a durable inbox of requests a person decides.

Each request is a stream: ``ApprovalRequested`` at position 1, then one decision at
position 2. Two people deciding at once cannot both win: the second append conflicts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from tether.memory.events import ApprovalDenied, ApprovalGranted, ApprovalRequested, Event
from tether.memory.sources import Clock
from tether.memory.store import Store, new_event
from tether.runtime.errors import ApprovalError, ApprovalNotFound, StreamConflict

Status = Literal["pending", "granted", "denied"]


@dataclass(frozen=True)
class InboxItem:
    """One approval request and its state."""

    id: uuid.UUID
    request: ApprovalRequested
    status: Status
    approver: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "id": str(self.id),
            "status": self.status,
            "episode": str(r.episode_id),
            "agent": r.agent,
            "action": r.action,
            "tool": r.tool,
            "arguments": r.arguments,
            "tier": r.tier,
            "reason": r.reason,
            "rules": r.rules,
            "requested_at": r.at.isoformat(),
            "approver": self.approver,
            "decision_reason": self.reason,
        }


def fold(events: list[Event]) -> InboxItem | None:
    """The state of one request from its stream."""
    if not events or not isinstance(events[0], ApprovalRequested):
        return None
    request = events[0]
    for e in events[1:]:
        if isinstance(e, ApprovalGranted):
            return InboxItem(request.originator_id, request, "granted", e.approver, e.reason)
        if isinstance(e, ApprovalDenied):
            return InboxItem(request.originator_id, request, "denied", e.approver, e.reason)
    return InboxItem(request.originator_id, request, "pending")


class Inbox:
    """The approvals inbox over the store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def request(self, approval_id: uuid.UUID, **fields: Any) -> ApprovalRequested:
        """The event that opens a request; the caller appends it with its own events."""
        return new_event(ApprovalRequested, approval_id, 1, self.clock.now(), **fields)

    def get(self, approval_id: uuid.UUID | str) -> InboxItem:
        """One request; ``ApprovalNotFound`` if there is none."""
        try:
            key = approval_id if isinstance(approval_id, uuid.UUID) else uuid.UUID(approval_id)
        except ValueError:
            raise ApprovalNotFound(str(approval_id)) from None
        item = fold(self.store.read(key))
        if item is None:
            raise ApprovalNotFound(str(approval_id))
        return item

    def items(self, status: Status | None = None) -> list[InboxItem]:
        """Every request, oldest first, optionally of one status."""
        streams: dict[uuid.UUID, list[Event]] = {}
        for _, e in self.store.of_type(ApprovalRequested, ApprovalGranted, ApprovalDenied):
            streams.setdefault(e.originator_id, []).append(e)
        found = [item for events in streams.values() if (item := fold(events)) is not None]
        return [i for i in found if status is None or i.status == status]

    def approve(self, approval_id: uuid.UUID | str, approver: str, reason: str) -> InboxItem:
        """Grant a pending request."""
        return self._decide(approval_id, ApprovalGranted, approver, reason)

    def deny(self, approval_id: uuid.UUID | str, approver: str, reason: str) -> InboxItem:
        """Deny a pending request."""
        return self._decide(approval_id, ApprovalDenied, approver, reason)

    def _decide(
        self,
        approval_id: uuid.UUID | str,
        cls: type[ApprovalGranted] | type[ApprovalDenied],
        approver: str,
        reason: str,
    ) -> InboxItem:
        item = self.get(approval_id)
        if item.status != "pending":
            raise ApprovalError(str(item.id), f"already {item.status} by {item.approver}")
        if not approver.strip():
            raise ApprovalError(str(item.id), "the approver's identity is required (--as NAME)")
        if approver == item.request.agent:
            raise ApprovalError(str(item.id), "an agent cannot approve its own request")
        decision = new_event(cls, item.id, 2, self.clock.now(), approver=approver, reason=reason)
        r = item.request
        audit = {
            "kind": "approval",
            "at": decision.at.isoformat(),
            "episode": str(r.episode_id),
            "agent": r.agent,
            "action": r.action,
            "tool": r.tool,
            "stage": "approval",
            "decision": "granted" if cls is ApprovalGranted else "denied",
            "tier": r.tier,
            "rules": list(r.rules),
            "arguments": self.store.signing_key().arguments_hash(r.arguments),
            "approver": approver,
            "request": str(item.id),
            "event": f"{item.id}/2",
        }
        try:
            self.store.append([decision], subject=r.subject, audit=[audit])
        except StreamConflict:
            raise ApprovalError(str(item.id), "decided by someone else a moment ago") from None
        return self.get(item.id)
