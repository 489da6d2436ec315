"""The events tether records: frozen, past tense, serialized by one mapper.

Streams, each written by one writer:

- the **episode** stream (id = the episode id): the episode's life;
- one **agent** stream per agent and episode (``agent_stream_id``): its task, model turns,
  and every action with one event per gate stage;
- one **approval** stream per request (id = the approval id): requested, then decided once;
- one **effect** stream per idempotency key (``effect_stream_id``): the effects ledger.
  An effect is version 1 of its stream, so a second attempt to record it conflicts;
- one **subject** stream per org-memory subject (``subject_stream_id``): facts about it;
- one **mailbox** stream per agent and episode (``mailbox_stream_id``): messages sent to
  it, by many writers, each placed at the end of the stream when it commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

NAMESPACE = uuid.UUID("5d0f6a52-8f3e-4c4e-9a55-746574686572")
"""Namespace for the name-based (version 5) ids of derived streams."""


def agent_stream_id(episode_id: uuid.UUID, agent: str) -> uuid.UUID:
    """The stream of one agent within one episode."""
    return uuid.uuid5(episode_id, f"agent:{agent}")


def mailbox_stream_id(episode_id: uuid.UUID, agent: str) -> uuid.UUID:
    """The mailbox of one agent within one episode: messages other agents sent it."""
    return uuid.uuid5(episode_id, f"mailbox:{agent}")


def effect_stream_id(key: str) -> uuid.UUID:
    """The effects-ledger stream of one idempotency key."""
    return uuid.uuid5(NAMESPACE, f"effect:{key}")


def subject_stream_id(subject: str) -> uuid.UUID:
    """The org-memory stream of one data subject (``customer:ada``)."""
    return uuid.uuid5(NAMESPACE, f"subject:{subject}")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every recorded event: which stream, which position, when."""

    originator_id: uuid.UUID
    """The stream this event belongs to."""
    originator_version: int
    """Its position in that stream, from 1."""
    at: datetime
    """When it happened, from the injected clock."""

    personal: ClassVar[tuple[str, ...]] = ()
    """Fields that may carry a data subject's personal data: sealed under the subject's
    key when the event belongs to one (see ``memory/keys.py``)."""


# --- the episode stream -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EpisodeStarted(Event):
    """A fleet started working on one input."""

    personal: ClassVar[tuple[str, ...]] = ("input", "context")

    topology: str
    """The topology's name."""
    source: dict[str, Any]
    """How to load the topology again (``{"kind": "file", "path": ..., "attr": ...}``)."""
    agents: list[str]
    """Every agent of the topology, in declaration order."""
    entry: str
    """The agent that receives the input."""
    input: dict[str, Any]
    """The task given to the entry agent (untrusted content may be inside)."""
    context: dict[str, Any]
    """Trusted structured data (the operator's and systems' records) rails may rely on."""
    subject: str | None = None
    """The data subject the episode is about (``customer:ada``): its personal data is
    sealed under that subject's key, and ``tether forget`` erases it."""
    fingerprint: dict[str, str] | None = None
    """Hashes of what defines the fleet (``file``: its source file, ``policy``: its
    grants, rails and rules): a resume under a changed topology is refused unless
    accepted. None in episodes recorded before tether kept it."""


@dataclass(frozen=True, kw_only=True)
class EpisodeTakenOver(Event):
    """A runner took the episode over from another that had not let it go (its lease had
    expired, its process was gone, or an operator forced it): the other's fencing token
    is refused from now on."""

    token: int
    """The new runner's fencing token."""
    owner: str
    """The new runner (``tether resume by alice``)."""
    previous: dict[str, Any]
    """The lease taken over: owner, host, pid, token, expires (seconds since the epoch)."""
    why: str
    """Why it could be taken: expired, its process is gone, or forced (``--take-over``)."""


@dataclass(frozen=True, kw_only=True)
class EpisodeCancelled(Event):
    """A person ended the episode (``tether cancel``): nothing more of it runs."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    by: str
    """Who cancelled it."""
    reason: str
    """Why."""
    was: str
    """How it stood then: running, waiting, or stuck (running with no runner)."""


@dataclass(frozen=True, kw_only=True)
class TopologyChangeAccepted(Event):
    """A person resumed the episode under a topology that changed since it started."""

    by: str
    changes: list[str]
    """What changed, in words (``the topology file changed``, ``the policy changed``)."""
    fingerprint: dict[str, str]
    """The topology's hashes from now on."""


@dataclass(frozen=True, kw_only=True)
class EpisodeForked(Event):
    """This episode began as a copy of the first steps of another."""

    source: uuid.UUID
    """The episode it was forked from."""
    steps: int
    """How many steps (model turns, with the actions they asked for) it shares."""


@dataclass(frozen=True, kw_only=True)
class EpisodeSuspended(Event):
    """The episode stopped making progress until a person decides."""

    waiting: list[str]
    """Ids of the approval requests it waits for."""
    agent: str
    """The agent that waits."""


@dataclass(frozen=True, kw_only=True)
class EpisodeResumed(Event):
    """Work on a suspended episode started again."""

    agent: str
    """The agent that continues."""


@dataclass(frozen=True, kw_only=True)
class EpisodeCompleted(Event):
    """The fleet finished the episode."""

    personal: ClassVar[tuple[str, ...]] = ("output",)

    agent: str
    """The agent that produced the final output."""
    output: str
    """The final output."""


@dataclass(frozen=True, kw_only=True)
class AgentRestarted(Event):
    """The supervisor restarts an agent that failed: it gets its last task again, with a
    fresh working memory and what it already spent still spent."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    agent: str
    """The agent restarted (for one_for_all, or a nested supervisor restarted: the agent
    that first got that work, and with it everyone under it)."""
    failed: str
    """The child whose failure caused it: an agent, or a nested supervisor that gave up."""
    reason: str
    """Why that child failed."""
    restart: int
    """This restart's number within the supervisor's window."""
    strategy: str
    """one_for_one, one_for_all or rest_for_one (host: its host actor died)."""
    supervisor: str = ""
    """The supervisor that restarted it ("" in events recorded before supervisors
    nested: the root)."""


@dataclass(frozen=True, kw_only=True)
class EpisodeEscalated(Event):
    """The supervisor gave up on an agent and asked a person what to do (an escalation
    in the inbox); the episode waits for the answer."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    agent: str
    """The agent that failed past the restart intensity."""
    escalation_id: uuid.UUID
    """The escalation's stream."""
    reason: str
    """Why the supervisor gave up."""


@dataclass(frozen=True, kw_only=True)
class BudgetGranted(Event):
    """A person gave an agent (and its supervisor) more budget, to retry."""

    agent: str
    """The agent."""
    steps: int
    """Steps added."""
    tokens: int
    """Model tokens added."""
    by: str
    """Who granted them."""
    cost: str = "0"
    """Dollars of model spend added (a decimal string)."""
    seconds: float = 0.0
    """Seconds of time to live added."""


@dataclass(frozen=True, kw_only=True)
class EpisodeFailed(Event):
    """The episode ended without a result."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    agent: str
    """The agent whose failure ended it."""
    reason: str
    """Why."""


# --- an agent stream ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskAssigned(Event):
    """An agent was given a task: the episode's input, or a handoff."""

    personal: ClassVar[tuple[str, ...]] = ("task",)

    episode_id: uuid.UUID
    """The episode the agent works in."""
    agent: str
    """The agent's name."""
    task: dict[str, Any]
    """What it was asked to do."""
    by: str
    """Who assigned it: ``operator`` or the agent that handed off."""
    instructions: str | None = None
    """The agent's instructions when it got the task (its system message), so the context
    it saw can be rebuilt from the stream alone."""


@dataclass(frozen=True, kw_only=True)
class ModelResponded(Event):
    """A model answered one turn (a nondeterministic input, so recorded as is)."""

    personal: ClassVar[tuple[str, ...]] = ("text", "tool_calls")

    turn: int
    """The turn's number within the agent's task, from 0."""
    text: str
    """The model's text."""
    tool_calls: list[dict[str, Any]]
    """The tool calls it asked for: ``{"id", "name", "arguments"}``."""
    usage: dict[str, int]
    """Token usage the model reported."""
    context: dict[str, Any] | None = None
    """What the model was shown: ``{"messages", "tokens", "digest"}`` (sha256)."""
    attempts: int = 1
    """Calls made for this turn: 1, plus retries after transient failures."""
    cost: str | None = None
    """What the turn cost in dollars (a decimal string), priced by the agent's ``price``;
    None = unpriced."""


@dataclass(frozen=True, kw_only=True)
class ContextCompacted(Event):
    """Working memory was full: the messages of an event range became one summary."""

    personal: ClassVar[tuple[str, ...]] = ("summary",)

    first: int
    """The first stream position replaced."""
    last: int
    """The last stream position replaced."""
    summary: str
    """The summary that stands in for them."""
    tokens_before: int
    """Estimated tokens before."""
    tokens_after: int
    """Estimated tokens after."""


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
    "context.customer.email"}}`` (``runtime/provenance.py``)."""

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

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    stage: ClassVar[str] = "verification"
    decides: ClassVar[bool] = True

    @staticmethod
    def upcast(state: dict[str, Any]) -> None:
        """Read an older record in today's words: before tether told an unverified result
        from a verified one, a tool without a post-condition was recorded as passing."""
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


@dataclass(frozen=True, kw_only=True)
class MemoryRecalled(Event):
    """Org-memory facts in the agent's scope went into its context for a task."""

    personal: ClassVar[tuple[str, ...]] = ("facts",)

    subjects: list[str]
    """The subjects its memory scopes named for this task."""
    facts: list[dict[str, Any]]
    """``{"id", "subject", "key", "statement", "source"}`` of each fact believed then."""


@dataclass(frozen=True, kw_only=True)
class AnswerRejected(Event):
    """The agent's answer failed its verifiers: fed back to it as a signal, and it goes
    on (too many in a row, and it is stuck)."""

    personal: ClassVar[tuple[str, ...]] = ("answer", "reasons")

    turn: int
    """The turn that answered."""
    answer: str
    """The answer."""
    reasons: list[str]
    """What each failed verifier said."""


@dataclass(frozen=True, kw_only=True)
class AgentFinished(Event):
    """The agent gave its final answer."""

    personal: ClassVar[tuple[str, ...]] = ("output",)

    output: str
    """The answer."""


@dataclass(frozen=True, kw_only=True)
class AgentHandedOff(Event):
    """The agent passed control to another agent."""

    personal: ClassVar[tuple[str, ...]] = ("reason", "note")

    to: str
    """The receiving agent."""
    reason: str
    """Why, as the agent put it."""
    note: str
    """What the receiver is told."""


@dataclass(frozen=True, kw_only=True)
class AgentDelegated(Event):
    """The agent gave work to other agents (its ``delegate`` calls, or its answer to a
    verifier agent) and waits for their answers; its supervisor runs them."""

    personal: ClassVar[tuple[str, ...]] = ("calls",)

    calls: list[dict[str, Any]]
    """``{"key", "call_id", "to", "task"}`` of each piece of work: ``key`` names it in
    the episode (``agent#action``), ``call_id`` ties the answer to the model's call."""


@dataclass(frozen=True, kw_only=True)
class WorkAnswered(Event):
    """What the agents that got the delegated work answered, fed back to the delegator."""

    personal: ClassVar[tuple[str, ...]] = ("answers",)

    answers: list[dict[str, Any]]
    """``{"key", "by", "outcome", "answer"}`` of each: ``by`` is the agent that ended the
    work (a worker may have handed it on), ``outcome`` finished or failed, ``answer``
    its final answer or why it failed."""


@dataclass(frozen=True, kw_only=True)
class AgentWaiting(Event):
    """The agent cannot go on until the named approvals are decided."""

    approvals: list[str]
    """The approval ids."""


@dataclass(frozen=True, kw_only=True)
class AgentFailed(Event):
    """The agent stopped without an answer."""

    personal: ClassVar[tuple[str, ...]] = ("reason",)

    reason: str
    """Why."""
    model_calls: int = 0
    """When its model failed (every retry of a turn, or an error not worth one): the calls
    that turn made, so re-execution fails the same turn the same way. 0: the failure was
    the agent's own (a budget, being stuck, a crash)."""


@dataclass(frozen=True, kw_only=True)
class MessagesRead(Event):
    """The agent took new messages from its mailbox into its working memory."""

    personal: ClassVar[tuple[str, ...]] = ("messages",)

    messages: list[dict[str, Any]]
    """``{"from", "body"}`` of each message, in the order they arrived."""
    through: int
    """The mailbox position of the last message read."""


# --- a mailbox stream -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MessageSent(Event):
    """A message to an agent: from another agent's ``send_message`` call (written with
    the action's record, so exactly once), or from outside the fleet."""

    personal: ClassVar[tuple[str, ...]] = ("body",)

    episode_id: uuid.UUID
    """The episode."""
    sender: str
    """The sending agent, or who sent it from outside."""
    to: str
    """The receiving agent."""
    body: str
    """What it says."""
    action: int = 0
    """The sender's action that sent it (0: sent from outside the fleet)."""


# --- an approval stream ---------------------------------------------------------------


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


# --- an escalation stream -------------------------------------------------------------


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


# --- org memory -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FactRecorded(Event):
    """The fleet learned a fact about a subject."""

    personal: ClassVar[tuple[str, ...]] = ("statement",)

    subject: str
    """Whom it is about (``customer:ada``)."""
    key: str
    """Which fact (a newer fact with the same key supersedes this one)."""
    statement: str
    """The fact."""
    source: dict[str, Any]
    """Where it came from: episode, agent, action, and ``event``, the id (stream/position)
    of the action that established it."""
    valid_from: datetime | None = None
    """Since when it is true in the world; None = since it was recorded."""
    valid_to: datetime | None = None
    """Until when it is true; None = until superseded."""


@dataclass(frozen=True, kw_only=True)
class FactConflicted(Event):
    """Two agents told different things about the same subject and key; a policy settled it.

    When the offered fact wins it is recorded (``FactRecorded``) right after this event;
    when it loses it lives on only here, so nothing an agent said is lost.
    """

    personal: ClassVar[tuple[str, ...]] = ("held", "offered")

    subject: str
    """Whom it is about."""
    key: str
    """Which fact."""
    held: dict[str, Any]
    """The fact believed until now: ``{"statement", "source"}``."""
    offered: dict[str, Any]
    """The fact another agent offered: ``{"statement", "source"}``."""
    policy: str
    """The policy that settled it (``latest_wins``, ``first_wins``, ``prefer``)."""
    outcome: str
    """``replaced`` (the offered fact wins) or ``kept`` (the held one stays)."""
    reason: str
    """Why, in words."""


@dataclass(frozen=True, kw_only=True)
class FactUsed(Event):
    """Facts were recalled (into an agent's context, or by a person): use keeps them alive."""

    subject: str
    """Whom they are about."""
    facts: list[int]
    """The facts (ids of their ``FactRecorded`` events) that were used."""
    by: str
    """Who used them (``agent@episode`` or a person)."""


@dataclass(frozen=True, kw_only=True)
class FactForgotten(Event):
    """Facts were forgotten by retention: org memory no longer offers them. (Their sealed
    record stays in the log until the subject is erased.)"""

    subject: str
    """Whom they were about."""
    facts: list[int]
    """The facts (ids of their ``FactRecorded`` events)."""
    why: str
    """``ttl`` (too old), ``cap`` (over the per-subject cap) or ``decay`` (unused)."""
    rule: str
    """The retention rule, in words (``ttl 365 days``)."""


# --- forgetting -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EpisodeForgotten(Event):
    """Retention let an episode go: it is no longer listed as the fleet's memory. Its sealed
    personal data stays unreadable once its subject is erased; its structure stays for audit."""

    why: str
    """``ttl`` (too old) or ``cap`` (more finished episodes than kept)."""
    rule: str
    """The retention rule, in words."""


@dataclass(frozen=True, kw_only=True)
class FieldRedacted(Event):
    """One field of one recorded event is redacted: replays, timelines and rebuilt contexts
    show it as ``[redacted]`` from now on. (A sealed original stays in the log, unreadable
    once the subject is erased; an unsealed one stays readable to the store's owner.)"""

    agent: str
    """The agent whose stream holds the event (``episode`` for the episode's own)."""
    position: int
    """The event's position in that stream."""
    field: str
    """The field redacted."""
    reason: str
    """Why."""
    by: str
    """Who redacted it."""


def erasure_stream_id(subject: str) -> uuid.UUID:
    """The stream of a subject's erasure receipts."""
    return uuid.uuid5(NAMESPACE, f"erasure:{subject}")


@dataclass(frozen=True, kw_only=True)
class SubjectErased(Event):
    """A data subject's personal data was erased: its key destroyed, what was derived from
    it rebuilt. The receipt names what was affected, never the data itself."""

    subject: str
    """Whom it was about."""
    requested_by: str
    """Who asked."""
    reason: str
    """Why (the legal ground, the ticket)."""
    sealed_events: int
    """Events with fields sealed under the destroyed key (they now read as erased)."""
    facts: int
    """Org-memory facts about the subject (now erased in the read model)."""
    rebuilt: list[str]
    """What was rebuilt or dropped: projections, snapshots."""
