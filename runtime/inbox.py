"""Gate stage 4, approval: a durable inbox of requests a person decides.

Each request is a stream: ``ApprovalRequested`` at position 1, then one outcome at
position 2: granted or denied by a person, or timed out. Two deciders at once cannot both
win: the second append conflicts.

Tiers: a low-tier action needs no one. A medium-tier request joins the **digest**, the
batch a person reviews and approves or denies in one go (``tether inbox digest``). A
high-tier request interrupts a person now: ``notify`` is called with it (by default a
warning on the ``tether.inbox`` logger, which an operator routes to a pager).

Deadlines: every request carries one (``Topology.approvals``, per tier). Past it, the
request is denied and recorded as ``timed_out``, distinct from a person's ``denied``, by
whoever looks first (``expire``: the inbox commands, ``tether resume``).

While an action waits, its agent is suspended: no process, thread or worker is held for
it, and of its budget only the one step reserved for the action; its episode is
``waiting`` until the decision, or the deadline, comes. Waiting spends no step, token or
dollar, and no time to live: ``Budget.ttl_s`` counts active time only, so a slow approver
cannot fail the agent; the request's deadline is the only clock a wait runs against.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from tether.memory.errors import ApprovalError, ApprovalNotFound, StreamConflict
from tether.memory.events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalTimedOut,
    Event,
)
from tether.memory.sources import Clock
from tether.memory.store import Store, new_event

Status = Literal["pending", "granted", "denied", "timed_out"]

log = logging.getLogger("tether.inbox")


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
            "deadline": r.deadline.isoformat() if r.deadline else None,
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
        if isinstance(e, ApprovalTimedOut):
            reason = f"no one decided by the deadline, {e.deadline.isoformat()}"
            return InboxItem(request.originator_id, request, "timed_out", "deadline", reason)
    return InboxItem(request.originator_id, request, "pending")


@dataclass(frozen=True)
class Digest:
    """The medium-tier requests waiting, as one batch with a stable id: a person
    decides exactly the batch they reviewed."""

    id: str
    items: tuple[InboxItem, ...]


def _warn(request: ApprovalRequested) -> None:
    log.warning(
        "approval needed now: %s %s %s #%s in episode %s: %s",
        request.originator_id,
        request.agent,
        request.tool,
        request.action,
        request.episode_id,
        request.reason,
    )


class Inbox:
    """The approvals inbox over the store."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        notify: Callable[[ApprovalRequested], None] = _warn,
    ) -> None:
        self.store = store
        self.clock = clock
        self.notify = notify
        """Called with each high-tier request once it is on record: interrupt a person."""

    def request(
        self, approval_id: uuid.UUID, wait: timedelta | None = None, **fields: Any
    ) -> ApprovalRequested:
        """The event that opens a request, due ``wait`` from now; the caller appends it
        with its own events."""
        at = self.clock.now()
        deadline = None if wait is None else at + wait
        return new_event(ApprovalRequested, approval_id, 1, at, deadline=deadline, **fields)

    def opened(self, request: ApprovalRequested) -> None:
        """A request is on record: interrupt a person now if it is high-tier."""
        if request.tier == "high":
            self.notify(request)

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
        kinds = (ApprovalRequested, ApprovalGranted, ApprovalDenied, ApprovalTimedOut)
        for _, e in self.store.of_type(*kinds):
            streams.setdefault(e.originator_id, []).append(e)
        found = [item for events in streams.values() if (item := fold(events)) is not None]
        return [i for i in found if status is None or i.status == status]

    def expire(self, now: datetime | None = None) -> list[InboxItem]:
        """Record every pending request past its deadline as timed out; return them."""
        now = now or self.clock.now()
        expired = []
        for item in self.items("pending"):
            deadline = item.request.deadline
            if deadline is None or deadline > now:
                continue
            r = item.request
            event = new_event(ApprovalTimedOut, item.id, 2, now, deadline=deadline)
            audit = self._audit(item, event, "timed_out", "deadline")
            try:
                self.store.append([event], subject=r.subject, audit=[audit])
            except StreamConflict:
                continue  # decided (or expired by someone else) a moment ago
            expired.append(self.get(item.id))
        return expired

    def digest(self) -> Digest:
        """The medium-tier requests now pending, oldest first, as one batch."""
        items = tuple(i for i in self.items("pending") if i.request.tier == "medium")
        ids = "\n".join(str(i.id) for i in items)
        return Digest(hashlib.sha256(ids.encode()).hexdigest()[:12], items)

    def decide_digest(
        self,
        digest_id: str,
        grant: bool,
        approver: str,
        reason: str,
        *,
        skip: Sequence[str] = (),
    ) -> list[InboxItem]:
        """Approve (or deny) every request of the digest ``digest_id`` but those in
        ``skip``, which stay pending. Refused if the digest changed since it was shown."""
        current = self.digest()
        if current.id != digest_id:
            raise ApprovalError(
                digest_id,
                f"the digest changed since it was shown (now {current.id}, "
                f"{len(current.items)} requests); review it again",
            )
        unknown = set(skip) - {str(i.id) for i in current.items}
        if unknown:
            raise ApprovalError(
                digest_id, f"--except names no request of the digest: {sorted(unknown)}"
            )
        decide = self.approve if grant else self.deny
        return [decide(i.id, approver, reason) for i in current.items if str(i.id) not in set(skip)]

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
        now = self.clock.now()
        deadline = item.request.deadline
        if item.status == "pending" and deadline is not None and deadline <= now:
            self.expire(now)
            item = self.get(item.id)
        if item.status == "timed_out":
            raise ApprovalError(
                str(item.id), f"{item.reason}; deadlines default to deny (it timed out)"
            )
        if item.status != "pending":
            raise ApprovalError(str(item.id), f"already {item.status} by {item.approver}")
        if not approver.strip():
            raise ApprovalError(str(item.id), "the approver's identity is required (--as NAME)")
        if approver == item.request.agent:
            raise ApprovalError(str(item.id), "an agent cannot approve its own request")
        decision = new_event(cls, item.id, 2, now, approver=approver, reason=reason)
        verdict = "granted" if cls is ApprovalGranted else "denied"
        audit = self._audit(item, decision, verdict, approver)
        try:
            self.store.append([decision], subject=item.request.subject, audit=[audit])
        except StreamConflict:
            raise ApprovalError(str(item.id), "decided by someone else a moment ago") from None
        return self.get(item.id)

    def _audit(self, item: InboxItem, event: Event, decision: str, approver: str) -> dict[str, Any]:
        """The audit record of a request's outcome (``memory/audit.py``)."""
        r = item.request
        return {
            "kind": "approval",
            "at": event.at.isoformat(),
            "episode": str(r.episode_id),
            "agent": r.agent,
            "action": r.action,
            "tool": r.tool,
            "stage": "approval",
            "decision": decision,
            "tier": r.tier,
            "rules": list(r.rules),
            "arguments": self.store.signing_key().arguments_hash(r.arguments),
            "approver": approver,
            "request": str(item.id),
            "event": f"{item.id}/2",
        }
