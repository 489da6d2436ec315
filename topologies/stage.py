"""Gate stages: the one interface every stage of the gate has, and what a topology adds.

The gate (``runtime/gate.py``) passes each action through a list of stages: its own seven
(boundaries → budget → governance → approval → execution → verification → record, in
``runtime/stages/``) and any a topology adds (``Topology(stages=(BusinessHours(),))``).
Every stage is an object with a name and one method, ``async def check(action) ->
StageOutcome``. A stage a topology adds says where it goes (``after``); its decision is
recorded for it as one generic event (``StageChecked``), which ``tether replay`` and the
audit trail read without its code::

    class BusinessHours:
        name = "business_hours"
        after = "governance"

        async def check(self, action: ActionView) -> StageOutcome:
            if 9 <= action.at.hour < 17:  # the action's recorded time, never the wall clock
                return StageOutcome("pass", "within business hours")
            return StageOutcome("approval", "outside business hours", ("hours",), tier="high")
"""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

GATE = ("boundaries", "budget", "governance", "approval", "execution", "verification", "record")
"""The gate's own stages, in order (``runtime/stages/``): a topology's stage needs another
name."""

PLACES = GATE[:3]
"""The gate's stages a topology's stage may follow: those that decide whether an action
may run at all, before a person is asked and before anything runs."""

Decision = Literal["pass", "deny", "approval", "fail", "wait"]


class ActionView(Protocol):
    """What a stage sees of an action in flight."""

    @property
    def agent(self) -> str:
        """The agent that asked for it."""
        ...

    @property
    def episode_id(self) -> uuid.UUID:
        """The episode it belongs to."""
        ...

    @property
    def number(self) -> int:
        """Its number within the agent's stream, from 1."""
        ...

    @property
    def tool(self) -> str:
        """The tool asked for."""
        ...

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments exactly as the model gave them."""
        ...

    @property
    def at(self) -> datetime:
        """When it was proposed, as recorded (from the injected clock: a re-execution sees
        the same time, so a stage that decides by it decides the same)."""
        ...


@dataclass(frozen=True)
class StageOutcome:
    """What a stage made of an action."""

    decision: Decision
    """``pass``: go on; ``deny``: end the action here; ``approval``: go on, but a person
    approves it before it runs (at ``tier``). The gate's own stages also ``fail`` an action
    (its tool ran, and failed or failed its check) and make one ``wait`` for a person."""
    reason: str = ""
    """Why, in words a person reads at 3 a.m. (for the gate's own stages that end or hold
    an action: what the agent is told)."""
    rules: tuple[str, ...] = ()
    """Ids of the rules that decided (recorded and audited; never an argument's value)."""
    tier: str | None = None
    """For ``approval``: the risk tier a person decides at, ``medium`` (the digest) or
    ``high`` (interrupt someone now); None = ``high``."""
    waiting_for: str | None = None
    """For ``wait``: the inbox item (an approval request or an escalation) it waits on."""


PASS = StageOutcome("pass")
"""Go on: the stage has nothing against the action."""

A = TypeVar("A", bound=ActionView, contravariant=True)


class Stage(Protocol[A]):
    """A stage of the gate: one check of an action in flight."""

    @property
    def name(self) -> str:
        """Its name in the record, the timeline and the audit trail."""
        ...

    async def check(self, action: A) -> StageOutcome:
        """Decide about ``action`` (a stage of the gate's own also records its events)."""
        ...


class CustomStage(Stage[ActionView], Protocol):
    """A stage a topology adds to the gate (``Topology.stages``)."""

    @property
    def after(self) -> str:
        """The stage it follows: one of ``PLACES`` (stages after the same one keep the
        order they are declared in)."""
        ...


def stage_problems(stages: Any, path: str) -> list[str]:
    """What is wrong with a topology's stages, each named with its path and the fix."""
    if not isinstance(stages, tuple):
        return [f"{path}: must be a tuple of stages, e.g. stages=(BusinessHours(),)"]
    out: list[str] = []
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        here = f"{path}[{i}]"
        name = getattr(stage, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            out.append(f"{here}.name: must be a name like 'business_hours', got {name!r}")
        elif name in GATE:
            out.append(f"{here}.name: {name!r} is one of the gate's own stages; give it another")
        elif name in seen:
            out.append(f"{here}.name: {name!r} is taken by an earlier stage; rename one")
        else:
            seen.add(name)
        after = getattr(stage, "after", None)
        if after not in PLACES:
            out.append(f"{here}.after: must be one of {', '.join(PLACES)}, got {after!r}")
        if not inspect.iscoroutinefunction(getattr(stage, "check", None)):
            out.append(
                f"{here}.check: must be `async def check(self, action) -> StageOutcome`, "
                f"got {type(getattr(stage, 'check', None)).__name__}"
            )
    return out
