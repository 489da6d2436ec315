"""Stage 7, record: every action that did not stop to wait ends here. Its budget is
settled, its outcome recorded, and its events written with its effects, facts and the
message it sent, in one transaction."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tether.agents.builtins import builtin
from tether.agents.loop import ActionResult
from tether.memory.events import (
    ActionRecorded,
    BudgetSettled,
    Event,
    MessageSent,
    mailbox_stream_id,
)
from tether.memory.store import new_event
from tether.topologies.stage import PASS, StageOutcome

from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class RecordStage:
    """Closes an action: the step it held settled, its outcome on record."""

    name = ActionRecorded.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        journal, n, opened, done = self.gate.journal, action.number, action.open, action.done
        if action.ending is not None:
            outcome, ended_at, observation = action.ending
        else:
            assert done is not None
            outcome, ended_at, observation = (
                "executed",
                self.name,
                json.dumps(done.result, sort_keys=True),
            )
        if opened.reserved:
            used = 1 if opened.executed else 0
            journal.record(
                BudgetSettled,
                action=n,
                decision="settled",
                used=used,
                released=opened.reserved - used,
                reason="1 step used" if used else "nothing ran; step released",
            )
        journal.record(
            ActionRecorded,
            action=n,
            decision=outcome,
            ended_at=ended_at,
            observation=observation,
            reason="executed" if outcome == "executed" else f"{outcome} at {ended_at}",
        )
        # Facts and messages only from a result that may be built on.
        tail = (*done.tail, *self._message(action)) if done and action.delivers else ()
        journal.flush(*(done.events if done else ()), tail=tail)
        result = done.result if done and outcome == "executed" else None
        action.closed = ActionResult(n, action.tool, outcome, observation, result=result)
        return PASS

    def _message(self, action: ActionInFlight) -> tuple[Event, ...]:
        """The message a ``send_message`` call delivers, into the recipient's mailbox with
        the action's record; none when the ledger fed the call back (it was delivered
        with the effect's first record). Stamped with the execution's recorded time."""
        tool, args = action.valid
        assert action.done is not None and action.executed_at is not None
        found = builtin(tool.name)
        if found is None or not found.delivers or action.done.replayed:
            return ()
        fields = args.model_dump()
        to = str(fields["to"])
        episode_id = self.gate.episode_id
        return (
            new_event(
                MessageSent,
                mailbox_stream_id(episode_id, to),
                0,  # a placeholder: the store puts it at the end of the shared stream
                action.executed_at,
                episode_id=episode_id,
                sender=self.gate.agent,
                to=to,
                body=str(fields["body"]),
                action=action.number,
            ),
        )
