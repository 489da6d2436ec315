"""Events of what the fleet remembers and forgets: recalled facts, messages between
agents, org-memory facts, retention, redaction and erasure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ._base import Event

# --- an agent stream: what it recalls and reads -------------------------------------


@dataclass(frozen=True, kw_only=True)
class MemoryRecalled(Event):
    """Org-memory facts in the agent's scope went into its context for a task."""

    personal: ClassVar[tuple[str, ...]] = ("facts",)

    subjects: list[str]
    """The subjects its memory scopes named for this task."""
    facts: list[dict[str, Any]]
    """``{"id", "subject", "key", "statement", "source"}`` of each fact believed then."""


@dataclass(frozen=True, kw_only=True)
class MessagesRead(Event):
    """The agent took new messages from its mailbox into its working memory."""

    personal: ClassVar[tuple[str, ...]] = ("messages",)

    messages: list[dict[str, Any]]
    """``{"from", "body"}`` of each message, in the order they arrived."""
    through: int
    """The mailbox position of the last message read."""


# --- a mailbox stream ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MessageSent(Event):
    """A message to an agent: from another agent's ``send_message`` call (written with
    the action's record, so exactly once), or from outside the fleet."""

    personal: ClassVar[tuple[str, ...]] = ("body",)

    episode_id: uuid.UUID
    """The episode."""
    sender: str
    """The sending agent, or who sent it from outside."""
    to: str
    """The receiving agent."""
    body: str
    """What it says."""
    action: int = 0
    """The sender's action that sent it (0: sent from outside the fleet)."""


# --- org memory ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FactRecorded(Event):
    """The fleet learned a fact about a subject."""

    personal: ClassVar[tuple[str, ...]] = ("statement",)

    subject: str
    """Whom it is about (``customer:ada``)."""
    key: str
    """Which fact (a newer fact with the same key supersedes this one)."""
    statement: str
    """The fact."""
    source: dict[str, Any]
    """Where it came from: episode, agent, action, and ``event``, the id (stream/position)
    of the action that established it."""
    valid_from: datetime | None = None
    """Since when it is true in the world; None = since it was recorded."""
    valid_to: datetime | None = None
    """Until when it is true; None = until superseded."""


@dataclass(frozen=True, kw_only=True)
class FactConflicted(Event):
    """Two agents told different things about the same subject and key; a policy settled it.

    When the offered fact wins it is recorded (``FactRecorded``) right after this event;
    when it loses it lives on only here, so nothing an agent said is lost.
    """

    personal: ClassVar[tuple[str, ...]] = ("held", "offered")

    subject: str
    """Whom it is about."""
    key: str
    """Which fact."""
    held: dict[str, Any]
    """The fact believed until now: ``{"statement", "source"}``."""
    offered: dict[str, Any]
    """The fact another agent offered: ``{"statement", "source"}``."""
    policy: str
    """The policy that settled it (``latest_wins``, ``first_wins``, ``prefer``)."""
    outcome: str
    """``replaced`` (the offered fact wins) or ``kept`` (the held one stays)."""
    reason: str
    """Why, in words."""


@dataclass(frozen=True, kw_only=True)
class FactUsed(Event):
    """Facts were recalled (into an agent's context, or by a person): use keeps them alive."""

    subject: str
    """Whom they are about."""
    facts: list[int]
    """The facts (ids of their ``FactRecorded`` events) that were used."""
    by: str
    """Who used them (``agent@episode`` or a person)."""


@dataclass(frozen=True, kw_only=True)
class FactForgotten(Event):
    """Facts were forgotten by retention: org memory no longer offers them. (Their sealed
    record stays in the log until the subject is erased.)"""

    subject: str
    """Whom they were about."""
    facts: list[int]
    """The facts (ids of their ``FactRecorded`` events)."""
    why: str
    """``ttl`` (too old), ``cap`` (over the per-subject cap) or ``decay`` (unused)."""
    rule: str
    """The retention rule, in words (``ttl 365 days``)."""


# --- forgetting ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EpisodeForgotten(Event):
    """Retention let an episode go: it is no longer listed as the fleet's memory. Its sealed
    personal data stays unreadable once its subject is erased; its structure stays for audit."""

    why: str
    """``ttl`` (too old) or ``cap`` (more finished episodes than kept)."""
    rule: str
    """The retention rule, in words."""


@dataclass(frozen=True, kw_only=True)
class FieldRedacted(Event):
    """One field of one recorded event is redacted: replays, timelines and rebuilt contexts
    show it as ``[redacted]`` from now on. (A sealed original stays in the log, unreadable
    once the subject is erased; an unsealed one stays readable to the store's owner.)"""

    agent: str
    """The agent whose stream holds the event (``episode`` for the episode's own)."""
    position: int
    """The event's position in that stream."""
    field: str
    """The field redacted."""
    reason: str
    """Why."""
    by: str
    """Who redacted it."""


@dataclass(frozen=True, kw_only=True)
class SubjectErased(Event):
    """A data subject's personal data was erased: its key destroyed, what was derived from
    it rebuilt. The receipt names what was affected, never the data itself."""

    subject: str
    """Whom it was about."""
    requested_by: str
    """Who asked."""
    reason: str
    """Why (the legal ground, the ticket)."""
    sealed_events: int
    """Events with fields sealed under the destroyed key (they now read as erased)."""
    facts: int
    """Org-memory facts about the subject (now erased in the read model)."""
    rebuilt: list[str]
    """What was rebuilt or dropped: projections, snapshots."""
