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
    """The outcome of one gate stage for one action.

    Each kind says how it is read: whether it records a decision (``decides``: it then has
    an audit record), what that record says of it (``audited``), and how its row of the
    timeline reads (``describe``, ``tone``), so the audit trail, ``tether replay`` and
    ``tether status`` show every stage, a topology's own included, without naming any.
    """

    stage: ClassVar[str]
    decides: ClassVar[bool] = False
    """Whether it records a decision: each such event has its audit record
    (``memory/coverage.py`` checks that none is missing)."""
    action: int
    """The action this outcome belongs to."""
    decision: str
    """What the stage decided (``pass``, ``deny``, ``allow``, ``approval`` ...)."""
    reason: str
    """Why, in words a person reads at 3 a.m."""

    def audited(self) -> dict[str, Any]:
        """What its audit record says of it besides the action and the decision: the risk
        tier, the ids of the rules that decided, who approved. Ids, never words."""
        return {"tier": None, "rules": [], "approver": None}

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        """The extra column of its timeline row, from its other fields ("": none)."""
        return ""

    @classmethod
    def tone(cls, decision: str) -> str:
        """How a decision reads at a glance: ``refused``, ``waiting`` or ``ok``."""
        if decision in ("deny", "denied", "fail", "error"):
            return "refused"
        if decision in ("waiting", "approval"):
            return "waiting"
        return "ok"


def stage_events() -> dict[str, type[StageEvent]]:
    """Every kind of stage event, by class name (a timeline row names its kind)."""
    found: dict[str, type[StageEvent]] = {}
    todo: list[type[StageEvent]] = [StageEvent]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def _effect(detail: dict[str, Any]) -> str:
    key = detail.get("effect_key")
    return f"effect {key}" if key else ""


@dataclass(frozen=True, kw_only=True)
class BoundariesChecked(StageEvent):
    """Stage 1: schema and rails. ``pass`` or ``deny``."""

    personal: ClassVar[tuple[str, ...]] = ("reason", "violations")

    stage: ClassVar[str] = "boundaries"
    decides: ClassVar[bool] = True
    violations: list[dict[str, Any]] = field(default_factory=list)
    """Each failed rule: ``{"rule", "field", "message"}``."""
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)
    """Where each argument came from: ``{"to": {"origin": "system", "source":
    "context.customer.email"}}`` (``runtime/_provenance.py``)."""

    def audited(self) -> dict[str, Any]:
        return {**super().audited(), "rules": sorted({v["rule"] for v in self.violations})}

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        origins = detail.get("provenance")
        if not isinstance(origins, dict) or not origins:
            return ""
        traced = ", ".join(
            f"{name} ← {o.get('origin')}" + (f" {o['source']}" if o.get("source") else "")
            for name, o in origins.items()
            if isinstance(o, dict)
        )
        return f"origins: {traced}"


@dataclass(frozen=True, kw_only=True)
class BudgetReserved(StageEvent):
    """Stage 2: budget reserved (``reserved``) or refused (``deny``)."""

    stage: ClassVar[str] = "budget"
    decides: ClassVar[bool] = True
    steps: int
    """Steps reserved (0 when refused)."""
    left: dict[str, int | None]
    """Steps left after the reservation, per ledger (agent, supervisor); None = no limit."""

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        left = detail.get("left")
        if not isinstance(left, dict):
            return ""
        return "left: " + ", ".join(f"{k} {'∞' if v is None else v}" for k, v in left.items())


@dataclass(frozen=True, kw_only=True)
class GovernanceDecided(StageEvent):
    """Stage 3: ``allow``, ``deny`` or ``approval``, at a risk tier."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "governance"
    decides: ClassVar[bool] = True
    tier: str
    """Risk tier: low, medium or high."""
    rules: list[str]
    """Ids of the rules that decided."""

    def audited(self) -> dict[str, Any]:
        return {**super().audited(), "tier": self.tier, "rules": list(self.rules)}

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        return f"tier {detail.get('tier')}; rules {', '.join(detail.get('rules', []))}"


@dataclass(frozen=True, kw_only=True)
class ApprovalSettled(StageEvent):
    """Stage 4: ``auto`` (tier low), or the decision a person took (``granted``/``denied``)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "approval"
    decides: ClassVar[bool] = True
    approval_id: uuid.UUID | None = None
    """The inbox item, if a person was asked."""
    approver: str | None = None
    """Who decided, if a person did."""

    def audited(self) -> dict[str, Any]:
        return {**super().audited(), "approver": self.approver}


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
    decides: ClassVar[bool] = True
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

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        return _effect(detail)


@dataclass(frozen=True, kw_only=True)
class ExecutionStarted(StageEvent):
    """An attempt to run the tool is about to start: written ahead of a side effect, so a
    crash inside it leaves this attempt on record without its end."""

    stage: ClassVar[str] = "execution"
    attempt: int
    """Which attempt at this action: 1, then 2 after one a crash cut short, ..."""
    effect_key: str | None = None
    """The idempotency key the tool is given (tools with a side effect)."""

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        return _effect(detail)


@dataclass(frozen=True, kw_only=True)
class EffectUncertain(StageEvent):
    """An attempt at a side effect was cut short by a crash, and the tool can neither be
    run again safely (it is not idempotent) nor asked whether it happened (no reconcile):
    a person must find out. The action waits for their answer (an escalation)."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "execution"
    decides: ClassVar[bool] = True
    escalation_id: uuid.UUID
    """The escalation a person answers: retry, or resolve done / not done."""
    effect_key: str | None = None

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        return _effect(detail)


@dataclass(frozen=True, kw_only=True)
class ActionVerified(StageEvent):
    """Stage 6: the post-condition held (``pass``) or not (``fail``); ``skipped`` when the
    tool declares none, or the result is a person's word that the effect happened."""

    class_version: ClassVar[int] = 2
    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "verification"
    decides: ClassVar[bool] = True

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 recorded a tool without a post-condition as passing; version 2 says
        it was not checked, so a verified result and an unverified one differ."""
        if state.get("decision") == "pass" and state.get("reason") == NO_POST_CONDITION:
            state["decision"] = "skipped"


NO_POST_CONDITION = "no post-condition declared"
"""The reason verification gives when a tool declares no post-condition (``skipped``)."""


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


@dataclass(frozen=True, kw_only=True)
class StageChecked(StageEvent):
    """A stage a topology added decided (``pass``, ``deny`` or ``approval``): one kind of
    event for every such stage, so the record reads without the stage's code."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    # The one stage event whose stage is a field: each added stage names its own.
    stage: str  # type: ignore[misc]
    decides: ClassVar[bool] = True
    rules: list[str] = field(default_factory=list)
    """Ids of the rules that decided."""
    tier: str | None = None
    """For ``approval``: the risk tier a person decides at."""

    def audited(self) -> dict[str, Any]:
        return {**super().audited(), "tier": self.tier, "rules": list(self.rules)}

    @classmethod
    def describe(cls, detail: dict[str, Any]) -> str:
        rules = f"rules {', '.join(detail.get('rules') or [])}" if detail.get("rules") else ""
        tier = f"tier {detail['tier']}" if detail.get("tier") else ""
        return "; ".join(p for p in (tier, rules) if p)


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
