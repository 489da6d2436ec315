"""Escalations: when a supervisor gives up on an agent, a person decides what happens.

Each escalation is a stream: ``EscalationRequested`` at position 1, carrying each agent's
best result so far, then one ``EscalationDecided`` at position 2: **retry** (with more
steps, tokens, dollars and seconds for the agent and its supervisor), **accept** the
partial result, or **abort**. Nothing is dropped silently: the episode waits, and
``tether resume`` carries out the decision. Decisions are audited like approvals.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tether.agents.builtins import folds
from tether.memory.errors import ApprovalError, ApprovalNotFound, ConfigError, StreamConflict
from tether.memory.events import (
    ActionProposed,
    ActionRecorded,
    AgentFinished,
    AgentHandedOff,
    EscalationDecided,
    EscalationRequested,
    Event,
    agent_stream_id,
)
from tether.memory.sources import Clock
from tether.memory.store import Store, new_event

OPTIONS = ("retry", "accept", "abort")
"""The answers to a supervisor that gave up."""
UNCERTAIN = ("retry", "done", "not-done")
"""The answers about a side effect a crash left uncertain: run it again, or it did (not)
happen (``tether inbox resolve ID --done|--not-done``)."""


@dataclass(frozen=True)
class Escalation:
    """One escalation and its state: pending, or the option a person chose."""

    id: uuid.UUID
    request: EscalationRequested
    decision: EscalationDecided | None = None

    @property
    def status(self) -> str:
        return "pending" if self.decision is None else self.decision.option

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "id": str(self.id),
            "kind": "escalation",
            "status": self.status,
            "episode": str(self.request.episode_id),
            "agent": self.request.agent,
            "reason": self.request.reason,
            "partial": self.request.partial,
            "options": self.request.options,
            "requested_at": self.request.at.isoformat(),
            "approver": d.approver if d else None,
            "decision_reason": d.reason if d else None,
            "granted": (
                {"steps": d.steps, "tokens": d.tokens, "cost": d.cost, "seconds": d.seconds}
                if d
                else None
            ),
        }


def fold(events: list[Event]) -> Escalation | None:
    if not events or not isinstance(events[0], EscalationRequested):
        return None
    decided = next((e for e in events[1:] if isinstance(e, EscalationDecided)), None)
    return Escalation(events[0].originator_id, events[0], decided)


def partial_results(store: Store, episode_id: uuid.UUID, agents: list[str]) -> dict[str, Any]:
    """Each agent's best result so far: what it last recorded as progress, else its
    output or handoff note; agents that did nothing are left out."""
    out: dict[str, Any] = {}
    for name in agents:
        tools: dict[int, str] = {}
        best: Any = None
        for e in store.read(agent_stream_id(episode_id, name)):
            if isinstance(e, ActionProposed):
                tools[e.action] = e.tool
            elif isinstance(e, ActionRecorded) and e.decision == "executed":
                if folds(tools.get(e.action)) == "progress":
                    recorded = json.loads(e.observation)
                    best = recorded.get("result") if isinstance(recorded, dict) else best
            elif isinstance(e, AgentFinished):
                best = e.output
            elif isinstance(e, AgentHandedOff) and best is None:
                best = e.note
        if best is not None:
            out[name] = best
    return out


class Escalations:
    """The escalations in the inbox."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def request(
        self, escalation_id: uuid.UUID, *, options: list[str] | None = None, **fields: Any
    ) -> EscalationRequested:
        """The event that opens an escalation; the caller appends it with its own."""
        return new_event(
            EscalationRequested,
            escalation_id,
            1,
            self.clock.now(),
            options=list(OPTIONS) if options is None else options,
            **fields,
        )

    def get(self, escalation_id: uuid.UUID | str) -> Escalation:
        try:
            key = (
                escalation_id if isinstance(escalation_id, uuid.UUID) else uuid.UUID(escalation_id)
            )
        except ValueError:
            raise ApprovalNotFound(str(escalation_id)) from None
        found = fold(self.store.read(key))
        if found is None:
            raise ApprovalNotFound(str(escalation_id))
        return found

    def items(self, pending_only: bool = True) -> list[Escalation]:
        streams: dict[uuid.UUID, list[Event]] = {}
        for _, e in self.store.of_type(EscalationRequested, EscalationDecided):
            streams.setdefault(e.originator_id, []).append(e)
        found = [x for events in streams.values() if (x := fold(events)) is not None]
        return [x for x in found if x.status == "pending" or not pending_only]

    def decide(
        self,
        escalation_id: uuid.UUID | str,
        option: str,
        approver: str,
        reason: str,
        *,
        steps: int = 0,
        tokens: int = 0,
        cost: Decimal = Decimal(0),
        seconds: float = 0.0,
    ) -> Escalation:
        """Choose one of the escalation's options: for a supervisor that gave up, retry
        (with ``steps``, ``tokens``, ``cost`` dollars and ``seconds`` of time to live
        more), accept or abort; for an uncertain side effect, retry, done or not-done."""
        item = self.get(escalation_id)
        options = item.request.options
        if option not in options:
            how = {
                "retry": "`tether inbox retry`",
                "accept": "`tether inbox accept`",
                "abort": "`tether inbox abort`",
                "done": "`tether inbox resolve --done`",
                "not-done": "`tether inbox resolve --not-done`",
            }
            raise ConfigError(
                f"{option!r} is not an option for escalation {item.id}; answer with "
                + " or ".join(how.get(o, o) for o in options)
            )
        amounts = (steps, tokens, cost, seconds)
        if not cost.is_finite() or seconds != seconds or any(a < 0 for a in amounts):
            raise ConfigError("--steps, --tokens, --cost and --seconds: amounts of 0 or more")
        if any(amounts) and (option != "retry" or "accept" not in options):
            raise ConfigError(
                "--steps, --tokens, --cost and --seconds go with the retry of an agent a "
                "supervisor gave up on, not with this answer"
            )
        if item.decision is not None:
            raise ApprovalError(
                str(item.id), f"already decided: {item.status} by {item.decision.approver}"
            )
        if not approver.strip():
            raise ApprovalError(str(item.id), "the approver's identity is required (--as NAME)")
        decision = new_event(
            EscalationDecided,
            item.id,
            2,
            self.clock.now(),
            option=option,
            approver=approver,
            reason=reason,
            steps=steps,
            tokens=tokens,
            cost=str(cost),
            seconds=float(seconds),
        )
        r = item.request
        audit = {
            "kind": "escalation",
            "at": decision.at.isoformat(),
            "episode": str(r.episode_id),
            "agent": r.agent,
            "stage": "escalation",
            "decision": option,
            "rules": [],
            "approver": approver,
            "granted": {"steps": steps, "tokens": tokens, "cost": str(cost), "seconds": seconds},
            "request": str(item.id),
            "event": f"{item.id}/2",
        }
        try:
            self.store.append([decision], subject=r.subject, audit=[audit])
        except StreamConflict:
            raise ApprovalError(str(item.id), "decided by someone else a moment ago") from None
        return self.get(item.id)
