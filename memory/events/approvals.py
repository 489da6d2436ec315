"""Events of the requests that wait for a person: approvals of actions, and escalations
of episodes a supervisor gave up on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ._base import Event

# --- an approval stream -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ApprovalRequested(Event):
    """An action waits for a person (an inbox item)."""

    personal: ClassVar[tuple[str, ...]] = ("arguments", "reason")

    episode_id: uuid.UUID
    """The episode."""
    agent: str
    """The asking agent."""
    action: int
    """The action's number in the agent's stream."""
    tool: str
    """The tool."""
    arguments: dict[str, Any]
    """The arguments as proposed."""
    tier: str
    """Risk tier."""
    rules: list[str]
    """The governance rules that asked for approval."""
    reason: str
    """Why approval is needed."""
    subject: str | None = None
    """The episode's data subject (its decisions are sealed under the same key)."""
    deadline: datetime | None = None
    """When an undecided request is denied as ``timed_out``; None = it waits forever."""


@dataclass(frozen=True, kw_only=True)
class ApprovalGranted(Event):
    """A person approved the request."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    approver: str
    """Who."""
    reason: str
    """Why, in their words."""


@dataclass(frozen=True, kw_only=True)
class ApprovalDenied(Event):
    """A person denied the request."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    approver: str
    """Who."""
    reason: str
    """Why, in their words."""


@dataclass(frozen=True, kw_only=True)
class ApprovalTimedOut(Event):
    """No one decided before the deadline: the request is denied, as ``timed_out``."""

    deadline: datetime
    """The deadline that passed."""


# --- an escalation stream -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EscalationRequested(Event):
    """A supervisor asks a person: retry with more budget, accept the partial result, or
    abort. It carries what every agent had achieved so far."""

    personal: ClassVar[tuple[str, ...]] = ("reason", "partial")

    episode_id: uuid.UUID
    """The episode."""
    agent: str
    """The agent that failed past the restart intensity."""
    reason: str
    """Why the supervisor gave up."""
    partial: dict[str, Any]
    """Each agent's best result so far (its recorded progress, or its output)."""
    options: list[str]
    """What the person may choose: retry, accept, abort."""
    subject: str | None = None
    """The episode's data subject."""


@dataclass(frozen=True, kw_only=True)
class EscalationDecided(Event):
    """A person chose what happens to an escalated episode."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    option: str
    """retry, accept or abort."""
    approver: str
    """Who."""
    reason: str
    """Why, in their words."""
    steps: int = 0
    """For a retry: steps added to the agent's and its supervisor's budgets."""
    tokens: int = 0
    """For a retry: model tokens added likewise."""
    cost: str = "0"
    """For a retry: dollars of model spend added likewise."""
    seconds: float = 0.0
    """For a retry: seconds of time to live added likewise."""
