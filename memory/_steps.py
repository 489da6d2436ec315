"""Places in an agent's stream, named one way everywhere a person reads or types them.

Three kinds of place, each labelled, each counted from 1 within one agent's stream:

- ``#2``: the agent's second action (the number ``tether replay`` shows), every event of
  its way through the gate; ``action2`` is the same place, for a shell where ``#``
  starts a comment;
- ``turn 3``: the agent's third model turn (``ModelResponded``), across its tasks;
- ``event 7``: the seventh event of the stream, whatever it is.

``tether replay``, ``--context AGENT:PLACE``, ``--reexecute``, ``diff`` and ``redact``
all print and read these. A bare number is refused: it meant a model call from 0 to
``--context`` and an event position to ``redact``, so it no longer says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tether.memory.errors import ConfigError

from .events import ActionProposed, Event, ModelResponded, StageEvent

Kind = Literal["action", "turn", "event"]

_FORMS = re.compile(r"^\s*(#|action|turn|event)\s*:?\s*(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    """One labelled place in an agent's stream."""

    kind: Kind
    """``action`` (``#N``), ``turn`` (a model turn) or ``event`` (a stream position)."""
    number: int
    """Counted from 1 within the agent's stream."""

    def __str__(self) -> str:
        return f"#{self.number}" if self.kind == "action" else f"{self.kind} {self.number}"


def parse_step(text: str, where: str) -> Step:
    """A step from what a person typed (``#2``, ``action2``, ``turn 3``, ``event7``);
    ``ConfigError`` naming ``where`` (the option or argument) otherwise."""
    found = _FORMS.match(text)
    hint = (
        "give '#N' or actionN (an action, as replay numbers them), turnN (a model turn) "
        "or eventN (a position in the agent's stream, as --reexecute reports it), "
        "each counted from 1"
    )
    if found is None:
        if text.strip().isdigit():
            n = int(text)
            hint = (
                f"a bare number no longer says which numbering; give action{n} (as "
                f"replay's #{n}), turn{n} (the agent's model turn {n}) or event{n} "
                f"(position {n} in its stream), each counted from 1"
            )
        raise ConfigError(f"{where} {text!r}: {hint}")
    kind, number = found.group(1).lower(), int(found.group(2))
    if number < 1:
        raise ConfigError(f"{where} {text!r}: places are counted from 1")
    return Step("action" if kind in ("#", "action") else kind, number)  # type: ignore[arg-type]


def events_at(stream: list[Event], step: Step) -> list[Event]:
    """The events of one agent's stream (in order, from its start) that ``step`` names:
    every event of an action, one model turn, or one event."""
    if step.kind == "event":
        return [e for e in stream if e.originator_version == step.number]
    if step.kind == "turn":
        turns: list[Event] = [e for e in stream if isinstance(e, ModelResponded)]
        return turns[step.number - 1 : step.number]
    return [e for e in stream if _action_of(e) == step.number]


def turn_of_action(stream: list[Event], action: int) -> int | None:
    """The model turn (from 1) that asked for ``action``: the last one before it."""
    turn = 0
    for e in stream:
        if isinstance(e, ModelResponded):
            turn += 1
        elif isinstance(e, ActionProposed) and e.action == action:
            return turn or None
    return None


def label(stream: list[Event], position: int) -> str:
    """How a person is shown the event at ``position`` of an agent's stream: ``#2, event
    7`` for an event of an action, ``turn 3, event 5`` for a model turn, else ``event 9``."""
    turn = 0
    for e in stream:
        if isinstance(e, ModelResponded):
            turn += 1
        if e.originator_version != position:
            continue
        action = _action_of(e)
        if action is not None:
            return f"{Step('action', action)}, event {position}"
        if isinstance(e, ModelResponded):
            return f"{Step('turn', turn)}, event {position}"
        break
    return f"event {position}"


def _action_of(e: Event) -> int | None:
    return e.action if isinstance(e, ActionProposed | StageEvent) else None


def places(stream: list[Event]) -> str:
    """What an agent's stream holds, by label: ``event 1 to 25, #1 to #3, turn 1 to 4``."""
    actions = sum(1 for e in stream if isinstance(e, ActionProposed))
    turns = sum(1 for e in stream if isinstance(e, ModelResponded))
    held = [f"event 1 to {len(stream)}" if stream else "no event"]
    held.append(f"#1 to #{actions}" if actions else "no action")
    held.append(f"turn 1 to {turns}" if turns else "no model turn")
    return "it has " + ", ".join(held)
