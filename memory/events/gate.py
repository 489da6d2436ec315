"""Events of the gate: an action proposed, one event per stage it passes through, and the
effects ledger its side effects are recorded in once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._base import Event

# --- an agent stream: its actions ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ActionProposed(Event):
    """An agent asked to use a tool; the gate takes over."""

    personal: ClassVar[tuple[str, ...]] = ("arguments",)

    action: int
    """The action's number within the agent's stream, from 1."""
    call_id: str
    """The model's id for the tool call."""
    tool: str
    """The tool's name."""
    arguments: dict[str, Any]
    """The arguments exactly as the model gave them."""


@dataclass(frozen=True, kw_only=True)
class StageEvent(Event):
    """The outcome of one gate stage for one action."""

    stage: ClassVar[str]
    action: int
    """The action this outcome belongs to."""
    decision: str
    """What the stage decided (``pass``, ``deny``, ``allow``, ``approval`` ...)."""
    reason: str
    """Why, in words a person reads at 3 a.m."""


@dataclass(frozen=True, kw_only=True)
class BoundariesChecked(StageEvent):
    """Stage 1: schema and rails. ``pass`` or ``deny``."""

    personal: ClassVar[tuple[str, ...]] = ("reason", "violations")

    stage: ClassVar[str] = "boundaries"
    violations: list[dict[str, Any]] = field(default_factory=list)
    """Each failed rule: ``{"rule", "field", "message"}``."""
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)
    """Where each argument came from: ``{"to": {"origin": "system", "source":
    "context.customer.email"}}`` (``runtime/provenance.py``)."""


@dataclass(frozen=True, kw_only=True)
class BudgetReserved(StageEvent):
    """Stage 2: budget reserved (``reserved``) or refused (``deny``)."""

    stage: ClassVar[str] = "budget"
    steps: int
    """Steps reserved (0 when refused)."""
    left: dict[str, int | None]
    """Steps left after the reservation, per ledger (agent, supervisor); None = no limit."""


@dataclass(frozen=True, kw_only=True)
class GovernanceDecided(StageEvent):
    """Stage 3: ``allow``, ``deny`` or ``approval``, at a risk tier."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "governance"
    tier: str
    """Risk tier: low, medium or high."""
    rules: list[str]
    """Ids of the rules that decided."""


@dataclass(frozen=True, kw_only=True)
class ApprovalSettled(StageEvent):
    """Stage 4: ``auto`` (tier low), or the decision a person took (``granted``/``denied``)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "approval"
    approval_id: uuid.UUID | None = None
    """The inbox item, if a person was asked."""
    approver: str | None = None
    """Who decided, if a person did."""


@dataclass(frozen=True, kw_only=True)
class ApprovalAwaited(StageEvent):
    """Stage 4: the action waits in the inbox (``waiting``)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "approval"
    approval_id: uuid.UUID
    """The inbox item."""
    tier: str
    """Its risk tier."""


@dataclass(frozen=True, kw_only=True)
class ActionExecuted(StageEvent):
    """Stage 5: the delegate ran the tool (``ok`` or ``error``)."""

    personal: ClassVar[tuple[str, ...]] = ("reason", "result")

    stage: ClassVar[str] = "execution"
    result: dict[str, Any] | None
    """The tool's result, if it returned one."""
    attempts: int
    """How many times the delegate called the tool (retries of transient errors)."""
    effect_key: str | None = None
    """The idempotency key of the side effect, for tools that have one."""
    effect_replayed: bool = False
    """True when the effect was already in the ledger and its result was fed back."""
    attempt: int = 1
    """Which execution attempt this result ends (``ExecutionStarted.attempt``): above 1,
    earlier attempts were cut short by crashes."""


@dataclass(frozen=True, kw_only=True)
class ExecutionStarted(StageEvent):
    """An attempt to run the tool is about to start: written ahead of a side effect, so a
    crash inside it leaves this attempt on record without its end."""

    stage: ClassVar[str] = "execution"
    attempt: int
    """Which attempt at this action: 1, then 2 after one a crash cut short, ..."""
    effect_key: str | None = None
    """The idempotency key the tool is given (tools with a side effect)."""


@dataclass(frozen=True, kw_only=True)
class EffectUncertain(StageEvent):
    """An attempt at a side effect was cut short by a crash, and the tool can neither be
    run again safely (it is not idempotent) nor asked whether it happened (no reconcile):
    a person must find out. The action waits for their answer (an escalation)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "execution"
    escalation_id: uuid.UUID
    """The escalation a person answers: retry, or resolve done / not done."""
    effect_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class ActionVerified(StageEvent):
    """Stage 6: the post-condition held (``pass``) or not (``fail``)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "verification"


@dataclass(frozen=True, kw_only=True)
class BudgetSettled(StageEvent):
    """Budget settled after the action: steps used, or released when nothing ran."""

    stage: ClassVar[str] = "budget"
    used: int
    """Steps consumed."""
    released: int
    """Steps returned to the ledger."""


@dataclass(frozen=True, kw_only=True)
class ActionRecorded(StageEvent):
    """Stage 7: the action's final outcome (``executed``, ``denied`` or ``failed``)."""

    personal: ClassVar[tuple[str, ...]] = ("observation",)

    stage: ClassVar[str] = "record"
    ended_at: str
    """The stage that ended the action (``record`` when it ran to the end)."""
    observation: str
    """What the agent is told, as the tool message of its next model call."""


# --- the effects ledger -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EffectApplied(Event):
    """A side effect happened in the world, once, under its idempotency key."""

    personal: ClassVar[tuple[str, ...]] = ("arguments", "result")

    key: str
    """The idempotency key."""
    episode_id: uuid.UUID
    """The episode."""
    agent: str
    """The agent whose action caused it."""
    action: int
    """The action's number."""
    tool: str
    """The tool."""
    arguments: dict[str, Any]
    """The validated arguments."""
    result: dict[str, Any]
    """What the tool returned."""
