"""Stage 5, execution: a delegate runs the tool (``runtime/delegate.py``); the attempt is
on record before it starts, so a crash inside it is never hidden. Resumed after such a
crash, a tool whose repeat is harmless runs again, one that can reconcile asks the outside
system, and any other waits for a person to find out what happened."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from tether.agents.loop import LoopState
from tether.memory.events import ActionExecuted, EffectUncertain, ExecutionStarted
from tether.topologies.stage import PASS, StageOutcome

from ..delegate import Execution, idempotency_key
from ..escalation import UNCERTAIN
from .base import ActionInFlight

if TYPE_CHECKING:
    from ..gate import Gate


class ExecutionStage:
    """Runs the tool once per attempt, and records how each attempt ended."""

    name = ActionExecuted.stage

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def check(self, action: ActionInFlight) -> StageOutcome:
        if action.open.uncertain is not None:
            return self._answered(action, action.open.uncertain)
        if action.open.attempts > 0:  # an attempt was under way when the run stopped
            return self._cut_short(action)
        return self._run(action)

    def _run(self, action: ActionInFlight, why: str = "") -> StageOutcome:
        gate, n = self.gate, action.number
        tool, args = action.valid
        attempt = action.open.attempts + 1
        gate.journal.record(
            ExecutionStarted,
            action=n,
            decision="started",
            reason=f"attempt {attempt}" + (f": {why}" if why else ""),
            attempt=attempt,
            effect_key=self._key(action) if tool.has_effect else None,
        )
        if tool.has_effect:
            gate.journal.flush()  # write-ahead: the decision is durable before the effect
        done = gate.delegate.execute(
            tool,
            args,
            episode_id=gate.episode_id,
            agent=gate.agent,
            action=n,
            context=gate.context,
            source_event=action.open.proposed,
            page=self._page,
        )
        if done.error is not None:
            gate.journal.record(
                ActionExecuted,
                action=n,
                decision="error",
                reason=done.error,
                result=None,
                attempts=done.attempts,
                effect_key=done.effect_key,
                attempt=attempt,
            )
            return StageOutcome("fail", f"the tool failed: {done.error}")
        return self._result(action, done, _ran(done.attempts, attempt))

    def _result(
        self, action: ActionInFlight, done: Execution, how: str, *, unchecked: bool = False
    ) -> StageOutcome:
        """Record a result (run, fed back, reconciled, or a person's word that the effect
        happened: ``unchecked``, there is nothing to verify) for the stages after."""
        if done.replayed:
            how = "fed back from the effects ledger"
        executed = self.gate.journal.record(
            ActionExecuted,
            action=action.number,
            decision="ok",
            reason=how,
            result=done.result,
            attempts=done.attempts,
            effect_key=done.effect_key,
            effect_replayed=done.replayed,
            attempt=action.open.attempts,
        )
        action.done, action.executed_at = done, executed.at
        action.unchecked = how if unchecked else None
        return PASS

    # --- a side effect a crash cut short ----------------------------------------------

    def _cut_short(self, action: ActionInFlight) -> StageOutcome:
        """An attempt at the tool was under way when the run crashed: its effect may or
        may not have happened."""
        gate, n, opened = self.gate, action.number, action.open
        tool, args = action.valid
        refused = f"the rails now refuse to run it again ({action.refused})"
        if tool.rerunnable and action.refused is None:
            return self._run(action, "the tool is idempotent: run again")
        if tool.reconcile is not None:
            found = gate.delegate.reconcile(
                tool,
                args,
                episode_id=gate.episode_id,
                agent=gate.agent,
                action=n,
                context=gate.context,
            )
            if found is None and action.refused is not None:
                return StageOutcome("deny", f"reconciled: it had not happened; {refused}")
            if found is None:
                return self._run(action, "reconciled: it had not happened; run again")
            if found.error is None:  # (the outside system's result: checked like the tool's)
                return self._result(action, found, "reconciled: it had happened")
            why = f"reconcile failed ({found.error})"
        elif action.refused is not None:
            why = refused
        else:
            why = "the tool is not idempotent and cannot reconcile"
        escalation_id = gate.ids.new()
        key = self._key(action)
        call = f"{tool.name} {json.dumps(opened.arguments, sort_keys=True, default=str)}"
        reason = (
            f"{call} may or may not have happened: attempt {opened.attempts} (started "
            f"{opened.started_at}, idempotency key {key}) was cut short by a crash, "
            f"and {why}; check, then "
            + (
                f"`tether inbox retry {escalation_id}` to run it again or "
                if action.refused is None
                else ""
            )
            + f"`tether inbox resolve {escalation_id} --done|--not-done`"
        )
        gate.journal.record(
            EffectUncertain,
            action=n,
            decision="uncertain",
            reason=reason,
            escalation_id=escalation_id,
            effect_key=key,
        )
        request = gate.escalations.request(
            escalation_id,
            options=list(UNCERTAIN),
            episode_id=gate.episode_id,
            agent=gate.agent,
            reason=reason,
            partial={
                "tool": tool.name,
                "arguments": opened.arguments,
                "action": n,
                "attempts": opened.attempts,
                "idempotency_key": key,
            },
            subject=gate.journal.subject,
        )
        gate.journal.flush(request)
        return StageOutcome(
            "wait", f"waiting for a person: {reason}", waiting_for=str(escalation_id)
        )

    def _answered(self, action: ActionInFlight, escalation_id: uuid.UUID) -> StageOutcome:
        """Carry out a person's answer about an uncertain side effect."""
        gate = self.gate
        tool, args = action.valid
        d = gate.escalations.get(escalation_id).decision
        assert d is not None  # (the gate resumes it only once a person has answered)
        said = f"{d.approver}: {d.reason or 'no reason given'}"
        if d.option == "retry" and action.refused is not None:
            # A person may run it again, never past the rails (as after an approval).
            return StageOutcome(
                "deny", f"not run again for {said}: denied by boundaries: {action.refused}"
            )
        if d.option == "retry":
            return self._run(action, f"run again by {said}")
        key = self._key(action)
        if d.option == "done":
            result = {"resolved": "done", "by": d.approver, "reason": d.reason}
            effect = gate.delegate.effect(
                key, tool, args, result, gate.episode_id, gate.agent, action.number
            )
            done = Execution(result, None, 0, key, events=effect)
            how = f"resolved by {said}: it had happened"
            return self._result(action, done, how, unchecked=True)
        gate.journal.record(
            ActionExecuted,
            action=action.number,
            decision="error",
            reason=f"resolved by {said}: it had not happened; not run again",
            result=None,
            attempts=0,
            effect_key=key,
            attempt=action.open.attempts,
        )
        return StageOutcome("fail", f"not done: {d.approver} found it had not happened")

    def _key(self, action: ActionInFlight) -> str:
        return idempotency_key(self.gate.episode_id, self.gate.agent, action.number)

    def _page(self, first: int, last: int) -> list[dict[str, Any]]:
        """The messages this agent's events ``first``..``last`` made, before compaction."""
        journal = self.gate.journal
        state = LoopState()
        for e in journal.store.read(journal.stream_id, after=first - 1):
            if e.originator_version > last:
                break
            state.apply(e, self.gate.agent, "")
        return [
            {
                "event": m.event,
                "role": m.role,
                "content": m.content,
                "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls],
            }
            for m in state.messages
            if first <= m.event <= last
        ]


def _ran(calls: int, attempt: int) -> str:
    """How an execution went, in words: its attempts, and calls retried in the last."""
    if attempt == 1:
        return f"ran in {calls} attempt{'s' if calls != 1 else ''}"
    cut = attempt - 1
    how = (
        "the first was cut short by a crash"
        if cut == 1
        else f"the first {cut} were cut short by crashes"
    )
    retried = f" (its last called the tool {calls} times)" if calls != 1 else ""
    return f"ran in {attempt} attempts; {how}{retried}"
