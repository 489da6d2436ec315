"""The gate: every intended action passes a list of stages — boundaries → budget →
governance → approval → execution → verification → record, with any a topology adds —
and each stage's outcome is an event. The stages are objects, one module each
(``runtime/stages/``); the gate runs the list, and enters it at the right stage for an
action a previous run left open.

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

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.agents.builtins import folds
from tether.agents.loop import ActionResult
from tether.agents.model import ToolCall
from tether.memory.events import (
    ActionExecuted,
    ActionProposed,
    ActionRecorded,
    ApprovalAwaited,
    ApprovalSettled,
    BudgetReserved,
    BudgetSettled,
    EffectUncertain,
    Event,
    ExecutionStarted,
    MemoryRecalled,
    MessagesRead,
    StageEvent,
    TaskAssigned,
    WorkAnswered,
)
from tether.memory.sources import Ids
from tether.memory.store import Journal
from tether.topologies.spec import Approvals
from tether.topologies.stage import CustomStage, Stage

from ._provenance import Sources
from .boundaries import Boundaries
from .budget import BudgetFold, Deadline
from .delegate import Delegate
from .escalation import Escalations
from .governance import Governance
from .inbox import Inbox
from .stages import ActionInFlight, OpenAction, gate_stages, run_now
from .stages.base import Outcome

_ENDS: dict[str, Outcome] = {"deny": "denied", "fail": "failed"}
"""How an action a stage ends is recorded, by what the stage decided."""


@dataclass(frozen=True)
class EpisodeRules:
    """What every gate of one episode shares: the episode, its input, and the rules of
    its topology that hold for every agent in it."""

    episode_id: uuid.UUID
    context: dict[str, Any]
    """The episode's input, shown to its agents (the system's words, but for the parts
    ``untrusted_input`` names)."""
    policy: str
    """The hash of the topology's policy (``Topology.policy_hash``), for the audit."""
    untrusted_input: tuple[str, ...] = ()
    """Paths of the episode's input a third party wrote (``Topology.untrusted_input``)."""
    approvals: Approvals = field(default_factory=Approvals)
    """Deadlines of approval requests, per tier."""
    agents: frozenset[str] = frozenset()
    """The fleet's agents: a message from one is an agent's words; from anyone else,
    untrusted content."""
    stages: tuple[CustomStage, ...] = ()
    """The stages the topology adds to the gate's own."""


@dataclass(frozen=True)
class Services:
    """Where an agent's gate reaches out: a person, the tools, new ids."""

    inbox: Inbox
    delegate: Delegate
    ids: Ids
    escalations: Escalations | None = None
    """Where a person is asked about a side effect a crash left uncertain (by default,
    beside the inbox)."""


class Gate:
    """The seven stages for one agent in one episode."""

    def __init__(
        self,
        *,
        agent: str,
        journal: Journal,
        boundaries: Boundaries,
        governance: Governance,
        budget: BudgetFold,
        episode: EpisodeRules,
        services: Services,
        spawn_check: Callable[[str, tuple[str, ...]], str | None] | None = None,
    ) -> None:
        self.agent = agent
        self.journal = journal
        self.boundaries = boundaries
        self.governance = governance
        self.budget = budget
        """The episode's budgets: the agent's steps are reserved there (its journal's
        events are folded into it by its host)."""
        self.spawn_check = spawn_check
        """Why handing work to an agent would start one too many (spawn budgets), given
        the agents it delegated to that have not answered (they start first)."""
        self.episode_id = episode.episode_id
        self.context = episode.context
        self.policy = episode.policy
        self.untrusted_input = episode.untrusted_input
        self.approvals = episode.approvals
        self.peers_known = episode.agents
        self.inbox = services.inbox
        self.delegate = services.delegate
        self.ids = services.ids
        self.escalations = services.escalations or Escalations(journal.store, self.inbox.clock)
        self.sources = Sources()
        """What the agent has been shown, by origin: the context is the system's."""
        self.sources.add(self.context, "context", "system")
        self._episode_text, self._stream_text = str(self.episode_id), str(journal.stream_id)
        self.delegated: dict[int, str] = {}
        """The workers of its delegate calls in flight or not answered yet, by action."""
        self.actions = 0
        self.open: dict[int, OpenAction] = {}
        self.deadline: Deadline | None = None
        """When the agent's time runs out, for the run it is in (set by its host)."""
        self.stages = gate_stages(self, episode.stages)
        """Its stages in order (``runtime/stages/``), a topology's own among them."""

    # --- the fold ---------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Fold one event of the agent's stream into the gate's state."""
        if isinstance(event, TaskAssigned):
            self._learn_task(event)
            self.delegated.clear()
        elif isinstance(event, WorkAnswered):
            self.delegated.clear()  # its workers started, or never will
        elif isinstance(event, ActionProposed):
            if folds(event.tool) == "answer":  # a worker starts, and answers later
                self.delegated[event.action] = str(event.arguments.get("to", ""))
            self.actions = max(self.actions, event.action)
            self.open[event.action] = OpenAction(
                event.tool,
                event.arguments,
                f"{event.originator_id}/{event.originator_version}",
                event.at,
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
        if not isinstance(event, StageEvent) or not event.decides:
            return None
        opened = self.open.get(event.action)
        if opened is None:
            return None
        if opened.arguments_hash is None:
            key = self.journal.store.signing_key()
            opened.arguments_hash = key.arguments_hash(opened.arguments)
        return {
            "kind": "decision",
            "at": event.at.isoformat(),
            "episode": self._episode_text,
            "agent": self.agent,
            "action": event.action,
            "tool": opened.tool,
            "stage": event.stage,
            "decision": event.decision,
            **event.audited(),  # its tier, rules and approver, as its kind says
            "policy": self.policy,
            "arguments": opened.arguments_hash,
            "event": f"{self._stream_text}/{event.originator_version}",
        }

    # --- the stages -------------------------------------------------------------------

    def submit(self, call: ToolCall) -> ActionResult:
        """Run one tool call through every stage."""
        n = self.actions + 1
        self.journal.record(
            ActionProposed, action=n, call_id=call.id, tool=call.name, arguments=call.arguments
        )
        return run_now(self._through(self._in_flight(n, "boundaries"), self.stages))

    def settle(self, action: int) -> ActionResult:
        """Finish an action a previous run left open.

        One that waits for a person goes on once the person has answered. One that a crash
        cut short after its write-ahead record (it was cleared to run) is executed again:
        the effects ledger feeds back an effect that already happened, and the tool gets
        the same idempotency key. Anything else is closed as failed.

        It re-enters the list at the stage that held it: approval if a person was asked
        and not yet heard, else execution. Either way its rails are checked again just
        before it runs: the world may have moved on meanwhile.
        """
        opened = self.open.get(action)
        if opened is None:
            return ActionResult(action, "", "failed", f"action {action} is not open")
        if opened.uncertain is not None:
            asked = self.escalations.get(opened.uncertain)
            if asked.decision is None:  # no answer yet: nothing goes on, nothing is recorded
                reason = f"waiting for a person: {asked.request.reason}"
                return ActionResult(
                    action, opened.tool, "waiting", reason, approval_id=str(asked.id)
                )
        named = {s.name: s for s in self.stages}
        running = self.stages[self.stages.index(named["execution"]) :]  # to the record
        if opened.approval_id is not None and not opened.cleared:
            entry, path = "approval", [named["approval"], named["boundaries"], *running]
        elif opened.cleared:
            entry, path = "execution", [named["boundaries"], *running]
        else:
            entry, path = "record", [named["record"]]
        resumed = self._in_flight(action, entry)
        if entry == "record":
            resumed.end("failed", entry, "interrupted before it was cleared to run; not executed")
        return run_now(self._through(resumed, path))

    async def _through(
        self, action: ActionInFlight, stages: Sequence[Stage[ActionInFlight]]
    ) -> ActionResult:
        """Pass an action through ``stages`` until one ends it or makes it wait for a
        person; the last, record, closes every action that did not wait."""
        *deciding, record = stages
        for stage in deciding:
            outcome = await stage.check(action)
            if outcome.decision == "wait":
                return ActionResult(
                    action.number,
                    action.tool,
                    "waiting",
                    outcome.reason,
                    approval_id=outcome.waiting_for,
                )
            if outcome.decision == "approval":
                action.ask(outcome)
            elif outcome.decision != "pass":
                action.end(_ENDS[outcome.decision], stage.name, outcome.reason)
                break
        await record.check(action)
        assert action.closed is not None
        return action.closed

    def _in_flight(self, n: int, entry: str) -> ActionInFlight:
        return ActionInFlight(self.agent, self.episode_id, n, self.open[n], entry)
