"""The gate: every intended action passes boundaries → budget → governance → approval →
execution → verification → record, and each stage's outcome is an event.

The gate only records events; its state (next action number, budget, spend, actions
waiting for a person) is a fold of those events, the same fold whether they were just
recorded or read back from the store after a restart.

Durability: an action's events are held in the agent's journal and written at most twice:
before a side effect runs (write-ahead, so a crash never leaves an effect without its
decision on record), and with its outcome, atomically with the effects ledger. A
read-only action is written once. An approval request is written atomically with the
action's events, so it is in the inbox exactly when the agent waits for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from tether.agents.builtins import builtin, folds
from tether.agents.loop import ActionResult, LoopState
from tether.agents.model import ToolCall
from tether.agents.tools import Tool
from tether.memory.coverage import DECIDING_STAGES
from tether.memory.events import (
    ActionExecuted,
    ActionProposed,
    ActionRecorded,
    ActionVerified,
    ApprovalAwaited,
    ApprovalSettled,
    BoundariesChecked,
    BudgetReserved,
    BudgetSettled,
    EffectUncertain,
    Event,
    ExecutionStarted,
    GovernanceDecided,
    MemoryRecalled,
    MessageSent,
    MessagesRead,
    StageEvent,
    TaskAssigned,
    WorkAnswered,
    mailbox_stream_id,
)
from tether.memory.sources import Ids
from tether.memory.store import Journal, new_event
from tether.topologies.spec import Approvals

from .boundaries import Boundaries
from .budget import BudgetFold, Deadline, action_key
from .delegate import Delegate, Execution, idempotency_key
from .escalation import UNCERTAIN, Escalations
from .governance import Governance
from .inbox import Inbox
from .provenance import Sources

Outcome = Literal["executed", "denied", "failed"]
E = TypeVar("E", bound=Event)

_AUDITED = frozenset(DECIDING_STAGES)
"""The stage events that record a decision; each appends an audit record."""


@dataclass
class _Open:
    """An action in flight, as folded from its events."""

    tool: str
    arguments: dict[str, Any]
    proposed: str
    """The id (stream/position) of the ActionProposed event: the source of its facts."""
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


class Gate:
    """The seven stages for one agent in one episode."""

    def __init__(
        self,
        *,
        agent: str,
        episode_id: uuid.UUID,
        journal: Journal,
        boundaries: Boundaries,
        budget: BudgetFold,
        governance: Governance,
        inbox: Inbox,
        delegate: Delegate,
        ids: Ids,
        context: dict[str, Any],
        policy: str,
        untrusted_input: tuple[str, ...] = (),
        approvals: Approvals | None = None,
        agents: frozenset[str] = frozenset(),
        spawn_check: Callable[[str, tuple[str, ...]], str | None] | None = None,
        escalations: Escalations | None = None,
    ) -> None:
        self.escalations = escalations or Escalations(journal.store, inbox.clock)
        """Where a person is asked about a side effect a crash left uncertain."""
        self.spawn_check = spawn_check
        """Why handing work to an agent would start one too many (spawn budgets), given
        the agents it delegated to that have not answered (they start first)."""
        self.delegated: dict[int, str] = {}
        """The workers of its delegate calls in flight or not answered yet, by action."""
        self.approvals = approvals or Approvals()
        """Deadlines of this agent's approval requests, per tier."""
        self.agent = agent
        self.untrusted_input = untrusted_input
        """Paths of the episode's input a third party wrote (``Topology.untrusted_input``)."""
        self.sources = Sources()
        """What the agent has been shown, by origin: the context is the system's."""
        self.sources.add(context, "context", "system")
        self.policy = policy
        """The hash of the topology's policy (``Topology.policy_hash``), for the audit."""
        self._episode_text, self._stream_text = str(episode_id), str(journal.stream_id)
        self.episode_id = episode_id
        self.journal = journal
        self.boundaries = boundaries
        self.budget = budget
        """The episode's budgets: the agent's steps are reserved there (its journal's
        events are folded into it by its host)."""
        self.governance = governance
        self.inbox = inbox
        self.delegate = delegate
        self.ids = ids
        self.context = context
        self.actions = 0
        self.open: dict[int, _Open] = {}
        self.deadline: Deadline | None = None
        """When the agent's time runs out, for the run it is in (set by its host)."""
        self.peers_known = agents
        """The fleet's agents: a message from one is an agent's words; from anyone else,
        untrusted content."""

    # --- the fold ---------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Fold one event of the agent's stream into the gate's state."""
        if isinstance(event, TaskAssigned):
            self._learn_task(event)
            self.delegated = {}
        elif isinstance(event, WorkAnswered):
            self.delegated = {}  # its workers started, or never will
        elif isinstance(event, ActionProposed):
            if folds(event.tool) == "answer":  # a worker starts, and answers later
                self.delegated[event.action] = str(event.arguments.get("to", ""))
            self.actions = max(self.actions, event.action)
            self.open[event.action] = _Open(
                event.tool, event.arguments, f"{event.originator_id}/{event.originator_version}"
            )
        elif isinstance(event, BudgetReserved) and event.steps:
            self.open[event.action].reserved = event.steps
        elif isinstance(event, BudgetSettled):
            self.open[event.action].reserved = 0
        elif isinstance(event, ApprovalAwaited):
            self.open[event.action].approval_id = event.approval_id
        elif isinstance(event, ApprovalSettled):
            self.open[event.action].cleared = event.decision in ("auto", "granted")
        elif isinstance(event, ExecutionStarted):
            opened = self.open[event.action]
            opened.attempts, opened.started_at = event.attempt, event.at.isoformat()
            opened.uncertain = None
        elif isinstance(event, EffectUncertain):
            self.open[event.action].uncertain = event.escalation_id
        elif isinstance(event, ActionExecuted):
            opened = self.open[event.action]
            opened.executed = True  # the tool ran (or its effect was fed back): a step used
            if event.decision == "ok":
                self.boundaries.note_executed(opened.tool, opened.arguments, event.at)
                found = self.boundaries.tools.get(opened.tool)
                kind = found.output if found is not None else "untrusted"
                self.sources.add(event.result, f"{opened.tool}#{event.action}", kind)
        elif isinstance(event, ActionRecorded):
            self.open.pop(event.action, None)
            if event.decision != "executed":
                self.delegated.pop(event.action, None)
        elif isinstance(event, MemoryRecalled):
            # Facts are written by governed tool calls into the fleet's own memory.
            for f in event.facts:
                self.sources.add(
                    {"statement": f.get("statement")}, f"memory.{f.get('subject')}", "system"
                )
        elif isinstance(event, MessagesRead):
            for m in event.messages:
                sender = str(m.get("from", ""))
                where = f"message from {sender}"
                if sender in self.peers_known:
                    self.sources.add({"body": m.get("body")}, where, "agent")
                else:
                    self.sources.add({"body": m.get("body")}, where, "untrusted")

    def _learn_task(self, event: TaskAssigned) -> None:
        """What a task shows the agent: the operator's input (but for the parts the
        topology calls untrusted), or, from another agent, its words and that input."""
        task = event.task
        if event.by == "operator":
            self.sources.add(task, "task", "operator", untrusted=self.untrusted_input)
            return
        handed = task.get("input")
        if isinstance(handed, dict):
            self.sources.add(handed, "task.input", "operator", untrusted=self.untrusted_input)
        rest = {k: v for k, v in task.items() if k != "input"}
        self.sources.add(rest, f"task from {event.by}", "agent")

    def audit(self, event: Event) -> dict[str, Any] | None:
        """The audit record of a decision the gate recorded (``memory/audit.py``): rule
        ids and hashes, never an argument's value or a reason's words."""
        if type(event) not in _AUDITED:
            return None
        assert isinstance(event, StageEvent)
        opened = self.open.get(event.action)
        if opened is None:
            return None
        if opened.arguments_hash is None:
            key = self.journal.store.signing_key()
            opened.arguments_hash = key.arguments_hash(opened.arguments)
        rules: list[str] = []
        if isinstance(event, BoundariesChecked):
            rules = sorted({v["rule"] for v in event.violations})
        elif isinstance(event, GovernanceDecided):
            rules = list(event.rules)
        return {
            "kind": "decision",
            "at": event.at.isoformat(),
            "episode": self._episode_text,
            "agent": self.agent,
            "action": event.action,
            "tool": opened.tool,
            "stage": event.stage,
            "decision": event.decision,
            "tier": event.tier if isinstance(event, GovernanceDecided) else None,
            "rules": rules,
            "policy": self.policy,
            "arguments": opened.arguments_hash,
            "approver": event.approver if isinstance(event, ApprovalSettled) else None,
            "event": f"{self._stream_text}/{event.originator_version}",
        }

    # --- the stages -------------------------------------------------------------------

    def submit(self, call: ToolCall) -> ActionResult:
        """Run one tool call through every stage."""
        n = self.actions + 1
        proposed = self._record(
            ActionProposed, action=n, call_id=call.id, tool=call.name, arguments=call.arguments
        )
        # 1. boundaries
        check = self.boundaries.check(call.name, call.arguments, self.sources, proposed.at)
        self._record(
            BoundariesChecked,
            action=n,
            decision="pass" if check.passed else "deny",
            reason=check.reason,
            violations=[v.as_dict() for v in check.violations],
            provenance={name: o.as_dict() for name, o in check.provenance.items()},
        )
        if not check.passed or check.tool is None or check.args is None:
            return self._end(n, "denied", "boundaries", f"denied by boundaries: {check.reason}")
        tool, args = check.tool, check.args
        # 2. budget
        reason = self.deadline.passed(proposed.at) if self.deadline is not None else None
        # The step is checked and held in one operation on the budget (the hold is the
        # one this action's BudgetReserved records; folding that event holds no more).
        short = self.budget.reserve(self.agent, action_key(n), steps=1) if reason is None else None
        if short is not None:
            reason = f"no step left on {short.ledger.name}'s budget (limit {short.ledger.limit})"
        if reason is None and _spawns(tool.name) and self.spawn_check is not None:
            others = tuple(to for a, to in self.delegated.items() if a != n)
            reason = self.spawn_check(str(getattr(args, "to", "")), others)
            if reason is not None:
                self.budget.release(self.agent, action_key(n))
        if reason is not None:
            self._record(
                BudgetReserved,
                action=n,
                decision="deny",
                reason=reason,
                steps=0,
                left=self.budget.left(self.agent, "steps"),
            )
            return self._end(n, "denied", "budget", f"denied by budget: {reason}")
        left = self.budget.left(self.agent, "steps")
        self._record(
            BudgetReserved,
            action=n,
            decision="reserved",
            steps=1,
            left=left,
            reason="1 step reserved",
        )
        # 3. governance
        decision = self.governance.decide(tool, args, check.provenance)
        self._record(
            GovernanceDecided,
            action=n,
            decision=decision.verdict,
            reason=decision.reason,
            tier=decision.tier,
            rules=list(decision.rules),
        )
        if decision.verdict == "deny":
            return self._end(n, "denied", "governance", f"denied by governance: {decision.reason}")
        # 4. approval
        if decision.verdict == "approval":
            approval_id = self.ids.new()
            self._record(
                ApprovalAwaited,
                action=n,
                decision="waiting",
                approval_id=approval_id,
                tier=decision.tier,
                reason=f"waiting for a person: {decision.reason}",
            )
            request = self.inbox.request(
                approval_id,
                self.approvals.deadline(decision.tier),
                episode_id=self.episode_id,
                agent=self.agent,
                action=n,
                tool=tool.name,
                arguments=call.arguments,
                tier=decision.tier,
                rules=list(decision.rules),
                reason=decision.reason,
                subject=self.journal.subject,
            )
            self.journal.flush(request)
            self.inbox.opened(request)
            return ActionResult(
                n,
                tool.name,
                "waiting",
                f"waiting for approval {approval_id}",
                approval_id=str(approval_id),
            )
        self._record(
            ApprovalSettled,
            action=n,
            decision="auto",
            reason=f"tier {decision.tier} needs no person",
        )
        return self._execute(n, tool, args)

    def settle(self, action: int) -> ActionResult:
        """Finish an action a previous run left open.

        One that waits for a person goes on once the person has decided. One that a crash
        cut short after its write-ahead record (it was cleared to run) is executed again:
        the effects ledger feeds back an effect that already happened, and the tool gets
        the same idempotency key. Anything else is closed as failed.
        """
        opened = self.open.get(action)
        if opened is None:
            return ActionResult(action, "", "failed", f"action {action} is not open")
        if opened.approval_id is not None and not opened.cleared:
            item = self.inbox.get(opened.approval_id)
            if item.status == "pending":
                return ActionResult(
                    action,
                    opened.tool,
                    "waiting",
                    f"waiting for approval {item.id}",
                    approval_id=str(item.id),
                )
            timed_out = item.status == "timed_out"
            who = (
                str(item.reason)
                if timed_out
                else f"{item.status} by {item.approver}: {item.reason or 'no reason given'}"
            )
            settled = self._record(
                ApprovalSettled,
                action=action,
                decision=item.status,
                reason=who,
                approval_id=item.id,
                approver=item.approver,
            )
            if item.status != "granted":
                said = "timed out" if timed_out else "denied"
                return self._end(action, "denied", "approval", f"{said}: {who}")
            # The world may have moved on while a person decided: check the rails again.
            check = self.boundaries.check(opened.tool, opened.arguments, self.sources, settled.at)
            self._record(
                BoundariesChecked,
                action=action,
                decision="pass" if check.passed else "deny",
                reason=f"checked again after approval: {check.reason}",
                violations=[v.as_dict() for v in check.violations],
                provenance={name: o.as_dict() for name, o in check.provenance.items()},
            )
        elif opened.cleared:
            check = self.boundaries.check(opened.tool, opened.arguments, self.sources)
        else:
            return self._end(
                action, "failed", "record", "interrupted before it was cleared to run; not executed"
            )
        if not check.passed or check.tool is None or check.args is None:
            return self._end(
                action, "denied", "boundaries", f"denied by boundaries: {check.reason}"
            )
        if opened.uncertain is not None:
            return self._answered(action, check.tool, check.args, opened.uncertain)
        if opened.attempts > 0:  # an attempt was under way when the run stopped
            return self._cut_short(action, check.tool, check.args)
        return self._execute(action, check.tool, check.args)

    # --- a side effect a crash cut short ------------------------------------------------

    def _cut_short(self, n: int, tool: Tool, args: BaseModel) -> ActionResult:
        """An attempt at the tool was under way when the run crashed: its effect may or
        may not have happened. A tool whose repeat is harmless runs again; one that can
        reconcile asks the outside system; any other waits for a person."""
        if tool.rerunnable:
            return self._execute(n, tool, args, "the tool is idempotent: run again")
        if tool.reconcile is not None:
            found = self.delegate.reconcile(
                tool,
                args,
                episode_id=self.episode_id,
                agent=self.agent,
                action=n,
                context=self.context,
            )
            if found is None:
                return self._execute(n, tool, args, "reconciled: it had not happened; run again")
            if found.error is None:  # (the outside system's result: checked like the tool's)
                return self._finish(n, tool, args, found, "reconciled: it had happened")
            why = f"reconcile failed ({found.error})"
        else:
            why = "the tool is not idempotent and cannot reconcile"
        opened = self.open[n]
        escalation_id = self.ids.new()
        call = f"{tool.name} {json.dumps(opened.arguments, sort_keys=True, default=str)}"
        reason = (
            f"{call} may or may not have happened: attempt {opened.attempts} (started "
            f"{opened.started_at}, idempotency key {self._key(n)}) was cut short by a crash, "
            f"and {why}; check, then `tether inbox retry {escalation_id}` to run it again or "
            f"`tether inbox resolve {escalation_id} --done|--not-done`"
        )
        self._record(
            EffectUncertain,
            action=n,
            decision="uncertain",
            reason=reason,
            escalation_id=escalation_id,
            effect_key=self._key(n),
        )
        request = self.escalations.request(
            escalation_id,
            options=list(UNCERTAIN),
            episode_id=self.episode_id,
            agent=self.agent,
            reason=reason,
            partial={
                "tool": tool.name,
                "arguments": opened.arguments,
                "action": n,
                "attempts": opened.attempts,
                "idempotency_key": self._key(n),
            },
            subject=self.journal.subject,
        )
        self.journal.flush(request)
        return ActionResult(
            n,
            tool.name,
            "waiting",
            f"waiting for a person: {reason}",
            approval_id=str(escalation_id),
        )

    def _answered(
        self, n: int, tool: Tool, args: BaseModel, escalation_id: uuid.UUID
    ) -> ActionResult:
        """Carry out a person's answer about an uncertain side effect (or keep waiting)."""
        item = self.escalations.get(escalation_id)
        d = item.decision
        if d is None:
            return ActionResult(
                n,
                tool.name,
                "waiting",
                f"waiting for a person: {item.request.reason}",
                approval_id=str(escalation_id),
            )
        said = f"{d.approver}: {d.reason or 'no reason given'}"
        if d.option == "retry":
            return self._execute(n, tool, args, f"run again by {said}")
        key = self._key(n)
        if d.option == "done":
            result = {"resolved": "done", "by": d.approver, "reason": d.reason}
            done = Execution(
                result,
                None,
                0,
                key,
                events=self.delegate.effect(
                    key, tool, args, result, self.episode_id, self.agent, n
                ),
            )
            how = f"resolved by {said}: it had happened"
            return self._finish(n, tool, args, done, how, checked=False)
        self._record(
            ActionExecuted,
            action=n,
            decision="error",
            reason=f"resolved by {said}: it had not happened; not run again",
            result=None,
            attempts=0,
            effect_key=key,
            attempt=self.open[n].attempts,
        )
        return self._end(
            n, "failed", "execution", f"not done: {d.approver} found it had not happened"
        )

    def _key(self, n: int) -> str:
        return idempotency_key(self.episode_id, self.agent, n)

    # --- execution, verification, record ---------------------------------------------

    def _execute(self, n: int, tool: Tool, args: BaseModel, why: str = "") -> ActionResult:
        # 5. execution: the attempt is on record before the tool runs (for a tool with a
        # side effect, durably: the write-ahead), so a crash inside it is never hidden.
        opened = self.open[n]
        attempt = opened.attempts + 1
        self._record(
            ExecutionStarted,
            action=n,
            decision="started",
            reason=f"attempt {attempt}" + (f": {why}" if why else ""),
            attempt=attempt,
            effect_key=self._key(n) if tool.has_effect else None,
        )
        if tool.has_effect:
            self.journal.flush()  # write-ahead: the decision is durable before the effect
        done = self.delegate.execute(
            tool,
            args,
            episode_id=self.episode_id,
            agent=self.agent,
            action=n,
            context=self.context,
            source_event=opened.proposed,
            page=self._page,
        )
        if done.error is not None:
            self._record(
                ActionExecuted,
                action=n,
                decision="error",
                reason=done.error,
                result=None,
                attempts=done.attempts,
                effect_key=done.effect_key,
                attempt=attempt,
            )
            return self._end(n, "failed", "execution", f"the tool failed: {done.error}")
        return self._finish(n, tool, args, done, _ran(done.attempts, attempt))

    def _finish(
        self, n: int, tool: Tool, args: BaseModel, done: Execution, how: str, checked: bool = True
    ) -> ActionResult:
        """Record a result (run, fed back, reconciled or resolved), verify it (unless it
        is a person's word, not a result: ``checked=False``), record it."""
        if done.replayed:
            how = "fed back from the effects ledger"
        executed = self._record(
            ActionExecuted,
            action=n,
            decision="ok",
            reason=how,
            result=done.result,
            attempts=done.attempts,
            effect_key=done.effect_key,
            effect_replayed=done.replayed,
            attempt=self.open[n].attempts,
        )
        # 6. verification
        assert done.result is not None
        if not checked:
            # A person's word that the effect happened: there is no result to check.
            self._record(
                ActionVerified,
                action=n,
                decision="skipped",
                reason=f"not checked: {how}",
            )
            return self._end(
                n,
                "executed",
                "record",
                json.dumps(done.result, sort_keys=True),
                done.events,
                result=done.result,
            )
        failure = tool.verify(args, done.result) if tool.verify else None
        if failure is not None:
            self._record(ActionVerified, action=n, decision="fail", reason=failure)
            return self._end(
                n,
                "failed",
                "verification",
                f"the result failed verification: {failure}",
                done.events,
            )
        self._record(
            ActionVerified,
            action=n,
            decision="pass",
            reason="post-condition held" if tool.verify else "no post-condition declared",
        )
        # 7. record
        return self._end(
            n,
            "executed",
            "record",
            json.dumps(done.result, sort_keys=True),
            done.events,
            result=done.result,
            # Facts and messages only from a verified result: nothing builds on the rest.
            tail=(*done.tail, *self._message(tool, args, executed, done.replayed)),
        )

    def _message(
        self, tool: Tool, args: BaseModel, executed: ActionExecuted, replayed: bool
    ) -> tuple[Event, ...]:
        """The message a ``send_message`` call delivers, into the recipient's mailbox with
        the action's record; none when the ledger fed the call back (it was delivered
        with the effect's first record). Stamped with the execution's recorded time."""
        found = builtin(tool.name)
        if found is None or not found.delivers or replayed:
            return ()
        fields = args.model_dump()
        to = str(fields["to"])
        return (
            new_event(
                MessageSent,
                mailbox_stream_id(self.episode_id, to),
                0,  # a placeholder: the store puts it at the end of the shared stream
                executed.at,
                episode_id=self.episode_id,
                sender=self.agent,
                to=to,
                body=str(fields["body"]),
                action=executed.action,
            ),
        )

    def _end(
        self,
        n: int,
        outcome: Outcome,
        ended_at: str,
        observation: str,
        others: tuple[Event, ...] = (),
        result: dict[str, Any] | None = None,
        tail: tuple[Event, ...] = (),
    ) -> ActionResult:
        opened = self.open.get(n)
        tool = opened.tool if opened is not None else ""
        if opened is not None and opened.reserved:
            used = 1 if opened.executed else 0
            self._record(
                BudgetSettled,
                action=n,
                decision="settled",
                used=used,
                released=opened.reserved - used,
                reason="1 step used" if used else "nothing ran; step released",
            )
        self._record(
            ActionRecorded,
            action=n,
            decision=outcome,
            ended_at=ended_at,
            observation=observation,
            reason="executed" if outcome == "executed" else f"{outcome} at {ended_at}",
        )
        self.journal.flush(*others, tail=tail)
        return ActionResult(n, tool, outcome, observation, result=result)

    def _page(self, first: int, last: int) -> list[dict[str, Any]]:
        """The messages this agent's events ``first``..``last`` made, before compaction."""
        events = self.journal.store.read(self.journal.stream_id, after=first - 1)
        state = LoopState()
        for e in events:
            if e.originator_version > last:
                break
            state.apply(e, self.agent, "")
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

    def _record(self, cls: type[E], **fields: Any) -> E:
        return self.journal.record(cls, **fields)


def _spawns(tool: str) -> bool:
    found = builtin(tool)
    return found is not None and found.spawns


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
