"""The agent loop: think (a model call) → act (each call through the gate) → observe.

The loop is plain Python: it knows nothing of Ray or SQL. Its state is a fold of its own
stream, so a loop rebuilt in a new process (``tether resume``) continues exactly where
the recorded history stops, without asking the model again for a recorded turn.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import tenacity

from tether.memory.errors import ModelError, TransientModelError
from tether.memory.events import (
    ActionProposed,
    ActionRecorded,
    AgentDelegated,
    AgentFailed,
    AgentFinished,
    AgentHandedOff,
    AgentWaiting,
    AnswerRejected,
    ApprovalAwaited,
    ContextCompacted,
    Event,
    MemoryRecalled,
    MessagesRead,
    ModelResponded,
    TaskAssigned,
    WorkAnswered,
)
from tether.memory.store import Journal

from . import _context as context
from .builtins import folds
from .conduct import Conduct
from .model import Message, Model, ModelRequest, ModelTurn, Price, ToolCall, ToolSpec

Outcome = Literal["finished", "handed_off", "waiting", "failed", "delegated"]


@dataclass(frozen=True)
class ActionResult:
    """What the gate made of one tool call."""

    action: int
    """The action's number."""
    tool: str
    """The tool that was asked for."""
    outcome: Literal["executed", "denied", "failed", "waiting"]
    """How it ended, or ``waiting`` for a person."""
    observation: str
    """What the agent is told."""
    result: dict[str, object] | None = None
    """The tool's result when it ran."""
    approval_id: str | None = None
    """The inbox item when it waits."""


class ActionGate(Protocol):
    """The gate as the loop sees it: every intended action goes through ``submit``."""

    def submit(self, call: ToolCall) -> ActionResult:
        """Run one call through every stage; never raises for a denied action."""
        ...

    def settle(self, action: int) -> ActionResult:
        """Finish an action a previous run left open: one that waited for a person (if the
        person has decided; else still ``waiting``), or one a crash cut short."""
        ...


@dataclass(frozen=True)
class AgentOutcome:
    """How one run of the loop ended."""

    agent: str
    """The agent."""
    outcome: Outcome
    """finished, handed_off, waiting, failed, or delegated (it waits for its workers)."""
    output: str = ""
    """The final answer, the handoff note, or the failure reason."""
    handoff_to: str | None = None
    """The receiving agent of a handoff."""
    waiting: tuple[str, ...] = ()
    """Approval ids the agent waits for."""
    reason: str = ""
    """Why the agent handed off, in its words."""
    calls: tuple[dict[str, Any], ...] = ()
    """The work it delegated and waits for: ``{"key", "call_id", "to", "task"}``."""


def recorded_calls(event: ModelResponded) -> tuple[ToolCall, ...]:
    """The tool calls of a recorded model turn, as the model made them."""
    return tuple(ToolCall(c["name"], c["arguments"], id=c["id"]) for c in event.tool_calls)


@dataclass
class LoopState:
    """The loop's state, folded from its stream."""

    task: dict[str, object] | None = None
    turns: int = 0
    messages: list[Message] = field(default_factory=list)
    calls: dict[int, str] = field(default_factory=dict)
    """action number → call id."""
    open_actions: list[int] = field(default_factory=list)
    """Actions proposed in the last turn that have not been recorded yet."""
    ended: AgentOutcome | None = None
    tools: dict[int, str] = field(default_factory=dict)
    """action number → tool."""
    last_call: tuple[str, str] | None = None
    """The last proposed call, as (tool, its arguments in canonical JSON)."""
    repeats: int = 0
    """How many proposals in a row were that same call."""
    since_progress: int = 0
    """Actions proposed since the agent last recorded progress (or got its task)."""
    best: dict[str, object] | None = None
    """The best result so far, as the agent last recorded it."""
    read_through: int = 0
    """The mailbox position of the last message read."""
    rejected: int = 0
    """Answers in a row that failed verification."""
    recalled: bool = False
    """Whether org memory was recalled for the current task."""
    awaiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Delegated work not answered yet, by key (``agent#action``)."""
    delegating: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The arguments of delegate calls in flight, by action."""
    handing: AgentOutcome | None = None
    """A handoff executed in the last turn (it takes effect once the turn's delegated
    work is answered, or at once)."""
    verifying: dict[str, Any] | None = None
    """The answer its verifier agents check (``{"answer", "turn"}``), until judged."""
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What each verifier agent answered, by key."""

    def apply(self, event: Event, agent: str, instructions: str) -> None:
        """Fold one event of the agent's stream."""
        v = event.originator_version
        if isinstance(event, TaskAssigned):
            self.task = event.task
            self.turns = 0
            self.ended = None
            self.last_call, self.repeats, self.since_progress = None, 0, 0
            self.rejected, self.recalled = 0, False
            self.awaiting, self.handing = {}, None
            self.verifying, self.verdicts = None, {}
            system = event.instructions if event.instructions is not None else instructions
            self.messages = [
                Message("system", system, event=v),
                Message("user", json.dumps(event.task, sort_keys=True, default=str), event=v),
            ]
        elif isinstance(event, ModelResponded):
            self.turns = event.turn + 1
            self.handing = None
            self.messages.append(
                Message("assistant", event.text, tool_calls=recorded_calls(event), event=v)
            )
        elif isinstance(event, ContextCompacted):
            self.messages = context.compact(self.messages, event.first, event.last, event.summary)
        elif isinstance(event, ActionProposed):
            self.calls[event.action] = event.call_id
            self.tools[event.action] = event.tool
            self.open_actions.append(event.action)
            call = (event.tool, canonical_arguments(event.arguments))
            self.repeats = self.repeats + 1 if call == self.last_call else 1
            self.last_call = call
            if folds(event.tool) != "progress":
                self.since_progress += 1
            if folds(event.tool) == "answer":
                self.delegating[event.action] = event.arguments
        elif isinstance(event, ActionRecorded):
            if event.action in self.open_actions:
                self.open_actions.remove(event.action)
            tool = self.tools.get(event.action)
            asked = self.delegating.pop(event.action, None)
            meaning = folds(tool)
            if meaning == "answer" and event.decision == "executed" and asked is not None:
                # Its result is the worker's answer, which comes later (``WorkAnswered``).
                key = f"{agent}#{event.action}"
                self.awaiting[key] = {
                    "key": key,
                    "call_id": self.calls.get(event.action),
                    "to": str(asked.get("to", "")),
                    "task": str(asked.get("task", "")),
                }
                return
            if meaning == "handoff" and event.decision == "executed":
                r = _json_object(event.observation)
                self.handing = AgentOutcome(
                    agent,
                    "handed_off",
                    output=str(r.get("note", "")),
                    handoff_to=str(r.get("to", "")),
                    reason=str(r.get("reason", "")),
                )
            if meaning == "progress" and event.decision == "executed":
                self.since_progress = 0
                self.best = _json_object(event.observation).get("result")
            self.messages.append(
                Message("tool", event.observation, call_id=self.calls.get(event.action), event=v)
            )
        elif isinstance(event, MemoryRecalled):
            self.recalled = True
            if event.facts:
                lines = "\n".join(
                    f"- {f['subject']} {f['key']}: {f['statement']} (fact {f['id']})"
                    for f in event.facts
                )
                self.messages.append(Message("user", f"What org memory holds:\n{lines}", event=v))
        elif isinstance(event, AnswerRejected):
            self.rejected += 1
            self.verifying, self.verdicts = None, {}
            reasons = "; ".join(event.reasons)
            self.messages.append(
                Message(
                    "user",
                    f"Your answer was not accepted: {reasons}. Fix it and answer again.",
                    event=v,
                )
            )
        elif isinstance(event, MessagesRead):
            self.read_through = event.through
            for m in event.messages:
                text = f"message from {m.get('from')}: {m.get('body')}"
                self.messages.append(Message("user", text, event=v))
        elif isinstance(event, AgentDelegated):
            calls = tuple(c for c in event.calls if isinstance(c, dict))
            self.ended = AgentOutcome(agent, "delegated", calls=calls)
            for c in calls:
                if isinstance(c.get("verify"), dict):  # (delegate calls wait already)
                    self.awaiting[str(c["key"])] = c
                    self.verifying = c["verify"]
        elif isinstance(event, WorkAnswered):
            for a in event.answers:
                if not isinstance(a, dict):
                    continue  # (redacted since)
                asked = self.awaiting.pop(str(a.get("key")), None)
                if asked is None:
                    continue
                if asked.get("verify"):
                    self.verdicts[str(asked["to"])] = a  # a verdict, not a call's result
                    continue
                answer = {k: a.get(k) for k in ("by", "outcome", "answer")}
                self.messages.append(
                    Message(
                        "tool",
                        json.dumps(answer, sort_keys=True),
                        call_id=asked["call_id"],
                        event=v,
                    )
                )
            if not self.awaiting:
                self.ended = None  # answered: it goes on
        elif isinstance(event, AgentFinished):
            self.ended = AgentOutcome(agent, "finished", output=event.output)
            self.verifying = None
        elif isinstance(event, AgentHandedOff):
            self.ended = AgentOutcome(
                agent, "handed_off", output=event.note, handoff_to=event.to, reason=event.reason
            )
        elif isinstance(event, AgentFailed):
            self.ended = AgentOutcome(agent, "failed", output=event.reason)
        elif isinstance(event, AgentWaiting | ApprovalAwaited):
            pass  # waiting is a pause, not an end: resuming settles the open actions


class TokenBudget(Protocol):
    """Model tokens an agent may still use (``runtime/budget.py``)."""

    def reserve(self, tokens: int) -> str | None:
        """Hold ``tokens`` for a call; or say why they cannot be held."""
        ...

    def release(self, tokens: int) -> None:
        """Give a reservation back once the call's use is on record."""
        ...


class TimeLimit(Protocol):
    """When an agent's time to live runs out (``runtime/budget.Deadline``)."""

    def passed(self, at: datetime) -> str | None:
        """Why the time is up at the recorded time ``at``; None while it is not."""
        ...


Recall = Callable[[dict[str, Any], datetime | None], tuple[list[str], list[dict[str, Any]]]]
"""Org memory for a task: (the subjects in scope, the facts believed about them)."""

Mailbox = Callable[[int], list[tuple[int, str, str]]]
"""The messages sent to an agent after a mailbox position: (position, from, body)."""


class AgentLoop:
    """Runs one agent's task to an outcome, recording each step in its journal."""

    def __init__(
        self,
        agent: str,
        model: Model,
        tools: tuple[ToolSpec, ...],
        gate: ActionGate,
        journal: Journal,
        *,
        conduct: Conduct | None = None,
        tokens: TokenBudget | None = None,
        price: Price | None = None,
        mailbox: Mailbox | None = None,
        recall: Recall | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conduct = conduct or Conduct()
        """How it works: instructions, limits, watches, retries and checks (its spec's)."""
        self.tokens = tokens
        """The model-token budget each call reserves from first; None = no limit."""
        self.price = price
        """What the model's tokens cost (each turn's cost is recorded); None = unpriced."""
        self.mailbox = mailbox
        """Where messages sent to the agent wait; read before each model call."""
        self.recall = recall
        """Org memory in the agent's scope, recalled at the start of each task."""
        self.sleep = sleep
        self.deadline: TimeLimit | None = None
        """When its time runs out, for the run it is in (set by its host)."""
        self.agent = agent
        self.model = model
        self.tools = tools
        self.gate = gate
        self.journal = journal
        self.state = LoopState()
        self._calls = 0
        """Model calls the current turn made so far (its retries included)."""

    def observe(self, event: Event) -> None:
        """Fold an event of this agent's stream into the loop's state."""
        self.state.apply(event, self.agent, self.conduct.instructions)

    def run(self) -> AgentOutcome:
        """Work until the task is finished, handed off, waiting for a person, or failed."""
        state = self.state
        if state.ended is not None:
            return state.ended
        if state.task is None:
            return self._end(AgentOutcome(self.agent, "failed", "no task assigned"))
        # Finish what the last run left open (approvals, or an action a crash cut short).
        waiting: list[str] = []
        handoff: AgentOutcome | None = None
        for action in list(state.open_actions):
            handoff = self._absorb(self.gate.settle(action), waiting) or handoff
        while True:
            if waiting:
                return self._end(AgentOutcome(self.agent, "waiting", waiting=tuple(waiting)))
            if state.awaiting:
                calls = tuple(state.awaiting.values())
                return self._end(AgentOutcome(self.agent, "delegated", calls=calls))
            if state.verifying is not None:  # its verifier agents answered
                answer, turn_no = str(state.verifying["answer"]), int(state.verifying["turn"])
                reasons = [why for v in state.verdicts.values() if (why := _rejection(v))]
                if not reasons:
                    return self._end(AgentOutcome(self.agent, "finished", output=answer))
                failed = self._rejected(answer, turn_no, reasons)
                if failed is not None:
                    return failed
            handoff = handoff or state.handing
            if handoff is not None:
                return self._end(handoff)
            late = self._late()
            if late:
                return self._end(AgentOutcome(self.agent, "failed", f"budget: {late}"))
            if state.turns >= self.conduct.max_turns:
                reason = f"max_turns ({self.conduct.max_turns}) reached without a final answer"
                return self._end(AgentOutcome(self.agent, "failed", reason))
            self._recall()
            self._read_messages()
            self._fit_context()
            request = ModelRequest(self.agent, state.turns, tuple(state.messages), self.tools)
            estimate = context.total(request.messages)
            short = self.tokens.reserve(estimate) if self.tokens is not None else None
            if short is not None:
                return self._end(AgentOutcome(self.agent, "failed", f"budget: {short}"))
            try:
                turn, attempts = self._respond(request)
            except ModelError as e:
                failed = AgentOutcome(self.agent, "failed", str(e))
                return self._end(failed, model_calls=self._calls)
            finally:
                if self.tokens is not None:
                    self.tokens.release(estimate)  # what the call used is counted from its event
            responded = self.journal.record(
                ModelResponded,
                turn=request.turn,
                text=turn.text,
                tool_calls=[
                    {"id": c.id, "name": c.name, "arguments": c.arguments} for c in turn.tool_calls
                ],
                usage={
                    "input_tokens": turn.usage.input_tokens,
                    "output_tokens": turn.usage.output_tokens,
                },
                context={
                    "messages": len(request.messages),
                    "tokens": context.total(request.messages),
                    "digest": context.digest(request.messages),
                },
                attempts=attempts,
                cost=str(self.price.cost(turn.usage)) if self.price is not None else None,
            )
            if not turn.tool_calls:
                reasons = self._verify(turn.text)
                if not reasons and self.conduct.verifier_agents:
                    # The functions passed it; the verifier agents see it next.
                    key = f"{self.agent}@{responded.originator_version}"
                    asked = json.dumps({"answer": turn.text, "task": state.task}, default=str)
                    checks = tuple(
                        {
                            "key": f"{key}:{name}",
                            "call_id": None,
                            "to": name,
                            "task": asked,
                            "verify": {"answer": turn.text, "turn": request.turn},
                        }
                        for name in self.conduct.verifier_agents
                    )
                    return self._end(AgentOutcome(self.agent, "delegated", calls=checks))
                if not reasons:
                    return self._end(AgentOutcome(self.agent, "finished", output=turn.text))
                failed = self._rejected(turn.text, request.turn, reasons)
                if failed is not None:
                    return failed
                continue
            for c in turn.tool_calls:
                stuck = self._stuck(c)
                if stuck:
                    return self._end(AgentOutcome(self.agent, "failed", f"stuck: {stuck}"))
                handoff = self._absorb(self.gate.submit(c), waiting) or handoff

    def _rejected(self, answer: str, turn: int, reasons: list[str]) -> AgentOutcome | None:
        """Record a rejected answer (fed back to the agent); the failure, if that many
        rejections in a row make it stuck."""
        self._record(AnswerRejected, turn=turn, answer=answer, reasons=reasons)
        limit = self.conduct.stuck_rejections
        if limit is not None and self.state.rejected >= limit:
            times = "once" if limit == 1 else f"{limit} times in a row"
            why = f"stuck: its answer failed verification {times}"
            return self._end(AgentOutcome(self.agent, "failed", f"{why}: {reasons[0]}"))
        return None

    def answer(self, answers: list[dict[str, Any]]) -> None:
        """Take the answers to the work it delegated (``{"key", "by", "outcome",
        "answer"}``), recorded; answers it does not wait for (any more) are ignored, so
        delivering twice records once."""
        mine = [a for a in answers if a.get("key") in self.state.awaiting]
        if mine:
            self._record(WorkAnswered, answers=mine)
            self.journal.flush()

    def _respond(self, request: ModelRequest) -> tuple[ModelTurn, int]:
        """The model's turn, retrying transient failures (bounded, with exponential
        backoff and jitter); and the calls it took."""
        attempts = self._calls = 0

        def once() -> ModelTurn:
            nonlocal attempts
            attempts = self._calls = attempts + 1
            return self.model.respond(request)

        try:
            return once(), attempts
        except TransientModelError as first:
            if self.conduct.model_attempts <= 1:
                raise
            self.sleep(self._pause(first, 1))  # (only a failure pays for the machinery)

        def wait(state: tenacity.RetryCallState) -> float:
            failed = state.outcome.exception() if state.outcome is not None else None
            return self._pause(failed, state.attempt_number + 1)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.conduct.model_attempts - 1),
            wait=wait,
            retry=tenacity.retry_if_exception_type(TransientModelError),
            reraise=True,
            sleep=self.sleep,
        )
        try:
            return retrying(once), attempts
        except TransientModelError as e:
            raise ModelError(f"model failed after {attempts} attempts: {e}") from e

    def _pause(self, failed: BaseException | None, n: int) -> float:
        """Seconds to wait after the ``n``-th failed call of a turn: the provider's
        ``Retry-After`` when it gave one, else exponential backoff with full jitter."""
        asked = getattr(failed, "retry_after", None)
        if asked is not None:
            return float(asked)
        return random.uniform(
            0, min(self.conduct.max_backoff_s, self.conduct.backoff_s * 2 ** (n - 1))
        )

    def _recall(self) -> None:
        """Bring the facts in scope for this task into working memory (recorded)."""
        if self.recall is None or self.state.recalled or self.state.task is None:
            return
        subjects, facts = self.recall(self.state.task, self.journal.last_at)
        self._record(MemoryRecalled, subjects=subjects, facts=facts)

    def _verify(self, answer: str) -> list[str]:
        """What each verifier that rejects the answer says."""
        task = self.state.task or {}
        return [why for check in self.conduct.verifiers if (why := check(answer, task))]

    def _read_messages(self) -> None:
        """Take new messages into working memory (recorded, so a rebuild sees them)."""
        if self.mailbox is None:
            return
        new = self.mailbox(self.state.read_through)
        if new:
            self._record(
                MessagesRead,
                messages=[{"from": sender, "body": body} for _, sender, body in new],
                through=new[-1][0],
            )

    def _late(self) -> str | None:
        """Why the agent's time is up, by the time of its latest recorded event."""
        at = self.journal.last_at
        return self.deadline.passed(at) if self.deadline is not None and at else None

    def _stuck(self, call: ToolCall) -> str:
        """Why proposing ``call`` now would show the agent is stuck; empty if it would not."""
        state, limit = self.state, self.conduct.stuck_repeats
        key = (call.name, canonical_arguments(call.arguments))
        if limit is not None and key == state.last_call and state.repeats + 1 >= limit:
            return f"{call.name} called with the same arguments {limit} times in a row"
        steps = self.conduct.stuck_without_progress
        watched = folds(call.name) != "progress"
        if steps is not None and watched and state.since_progress >= steps:
            return f"no progress recorded in {steps} actions (record_progress)"
        return ""

    def _fit_context(self) -> None:
        """Compact working memory if it passed its bound (recorded, so rebuilds match)."""
        if self.conduct.context_tokens is None:
            return
        before = context.total(self.state.messages)
        found = context.plan(self.state.messages, self.conduct.context_tokens)
        if found is None:
            return
        after = context.total(
            context.compact(self.state.messages, found.first, found.last, found.summary)
        )
        self._record(
            ContextCompacted,
            first=found.first,
            last=found.last,
            summary=found.summary,
            tokens_before=before,
            tokens_after=after,
        )

    def _absorb(self, result: ActionResult, waiting: list[str]) -> AgentOutcome | None:
        """Note an action that waits; return the handoff an executed handoff call makes.

        A handoff ends the loop only after the turn's other calls went through the gate.
        """
        if result.outcome == "waiting" and result.approval_id:
            waiting.append(result.approval_id)
        if folds(result.tool) != "handoff" or result.outcome != "executed" or not result.result:
            return None
        r = result.result
        return AgentOutcome(
            self.agent,
            "handed_off",
            output=str(r.get("note", "")),
            handoff_to=str(r["to"]),
            reason=str(r.get("reason", "")),
        )

    def _record(self, cls: type[Event], **fields: object) -> None:
        self.journal.record(cls, **fields)  # the journal feeds it back to ``observe``

    def _end(self, outcome: AgentOutcome, model_calls: int = 0) -> AgentOutcome:
        if outcome.outcome == "waiting":
            self._record(AgentWaiting, approvals=list(outcome.waiting))
        elif outcome.outcome == "handed_off":
            self._record(
                AgentHandedOff,
                to=outcome.handoff_to or "",
                reason=outcome.reason,
                note=outcome.output,
            )
        elif outcome.outcome == "delegated":
            self._record(AgentDelegated, calls=list(outcome.calls))
        elif outcome.outcome == "finished":
            self._record(AgentFinished, output=outcome.output)
        elif model_calls:
            self._record(AgentFailed, reason=outcome.output, model_calls=model_calls)
        else:
            self._record(AgentFailed, reason=outcome.output)
        self.journal.flush()
        return outcome


def _rejection(verdict: dict[str, Any]) -> str | None:
    """Why a verifier agent's answer rejects the answer it checked; None if it approves."""
    said = str(verdict.get("answer", "")).strip()
    by = verdict.get("by")
    if verdict.get("outcome") != "finished":
        return f"{by} could not verify it: {said}"
    if said.lower().startswith("approve"):
        return None
    return f"{by}: {said}"


def _json_object(text: str) -> dict[str, Any]:
    """A recorded observation as the object it was (empty if it was redacted since)."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def canonical_arguments(arguments: object) -> str:
    """A call's arguments as one string, equal for equal arguments."""
    return json.dumps(arguments, sort_keys=True, default=str)


def context_at(events: list[Event], call: int) -> list[Message]:
    """Exactly what the agent's model was shown at its ``call``-th model call (from 0),
    rebuilt from the agent's stream alone (compactions included)."""
    state = LoopState()
    seen = 0
    agent = next((e.agent for e in events if isinstance(e, TaskAssigned)), "")
    for event in events:
        if isinstance(event, ModelResponded):
            if seen == call:
                return state.messages
            seen += 1
        state.apply(event, agent, "")
    raise IndexError(f"the stream has {seen} model calls; call {call} is not among them")


__all__ = [
    "ActionGate",
    "ActionResult",
    "AgentLoop",
    "AgentOutcome",
    "LoopState",
    "context_at",
]
