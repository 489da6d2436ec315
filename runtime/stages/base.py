"""What every stage of the gate shares: the action in flight, and the shim that runs the
stages (async, as the next issue's gate will be) from today's synchronous gate."""

from __future__ import annotations

import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from tether.agents.loop import ActionResult
from tether.agents.tools import Tool
from tether.topologies.spec import TIER_RANK
from tether.topologies.stage import StageOutcome

from ..boundaries import BoundaryCheck
from ..delegate import Execution

T = TypeVar("T")

Outcome = Literal["executed", "denied", "failed"]


@dataclass
class OpenAction:
    """An action not yet recorded as ended, as folded from its events: what earlier stages
    (of this run or of one before a restart) decided."""

    tool: str
    arguments: dict[str, Any]
    proposed: str
    """The id (stream/position) of the ActionProposed event: the source of its facts."""
    at: datetime
    """When it was proposed."""
    approval_id: uuid.UUID | None = None
    cleared: bool = False
    """Approved, by tier or by a person: only execution and what follows remain."""
    reserved: int = 0
    executed: bool = False
    arguments_hash: str | None = None
    """The salted hash its audit records carry instead of the arguments."""
    attempts: int = 0
    """Execution attempts started (``ExecutionStarted``): one more than finished means a
    crash cut the last one short."""
    started_at: str = ""
    """When the last attempt started (ISO 8601), for a person who must check on it."""
    uncertain: uuid.UUID | None = None
    """The escalation a person answers about an attempt whose effect is uncertain."""


@dataclass(frozen=True)
class Asked:
    """Why a person must approve an action before it runs."""

    tier: str
    rules: tuple[str, ...]
    reason: str


@dataclass
class ActionInFlight:
    """One action on one pass through the gate (its first, or a resume): what its events
    say so far, and what this pass's stages found out for the stages after them."""

    agent: str
    episode_id: uuid.UUID
    number: int
    open: OpenAction
    entry: str
    """The stage this pass entered at: ``boundaries`` for a new action; for a resumed one
    ``approval`` (a person was asked) or ``execution`` (a crash cut it short)."""
    rails: BoundaryCheck | None = None
    """What the boundaries stage found: the validated tool and arguments, their origins."""
    tier: str = "low"
    """Its risk tier, as governance decided it."""
    asked: Asked | None = None
    """Set when a stage asks a person to approve it (``StageOutcome("approval")``)."""
    done: Execution | None = None
    """What execution produced: a run, a result fed back, or a person's word."""
    executed_at: datetime | None = None
    """When that was recorded (``ActionExecuted``)."""
    refused: str | None = None
    """Set when the rails, checked again on resume, refuse an action whose last attempt a
    crash cut short: it is not run again, but it may have happened (execution finds out)."""
    unchecked: str | None = None
    """Set when the result is a person's word, not one to verify: how it came about."""
    delivers: bool = False
    """Its result may be built on (it passed its check, or had none): the facts and
    messages it made go out with its record."""
    ending: tuple[Outcome, str, str] | None = None
    """How it ended before it ran to the end: (outcome, the stage, what the agent is told)."""
    closed: ActionResult | None = None
    """What the gate answers, once the record stage closed it."""

    @property
    def tool(self) -> str:
        return self.open.tool

    @property
    def arguments(self) -> dict[str, Any]:
        return self.open.arguments

    @property
    def at(self) -> datetime:
        return self.open.at

    @property
    def valid(self) -> tuple[Tool, BaseModel]:
        """The tool and arguments the boundaries stage validated (a stage after it runs
        only when it passed)."""
        assert self.rails is not None and self.rails.tool is not None
        assert self.rails.args is not None
        return self.rails.tool, self.rails.args

    def ask(self, outcome: StageOutcome) -> None:
        """A stage wants a person to approve the action: the strictest tier asked for
        wins, and the person sees every asker's rules and reasons."""
        tier, rules, reason = outcome.tier or "high", outcome.rules, outcome.reason
        if self.asked is not None:
            tier = max(tier, self.asked.tier, key=TIER_RANK.__getitem__)
            rules, reason = (*self.asked.rules, *rules), f"{self.asked.reason}; {reason}"
        self.asked = Asked(tier, rules, reason)

    def end(self, outcome: Outcome, stage: str, observation: str) -> None:
        self.ending = (outcome, stage, observation)


def run_now(step: Coroutine[Any, Any, T]) -> T:
    """Run the gate's stages, which are async, from the synchronous gate: here and now,
    without an event loop (none of them waits on I/O). The one place the two meet, until
    the agent loop and the gate are async too."""
    try:
        while True:
            if step.send(None) is not None:
                raise RuntimeError(
                    "a gate stage awaited I/O; stages run synchronously until the gate is async"
                )
    except StopIteration as done:
        value: T = done.value
        return value
    finally:
        step.close()
