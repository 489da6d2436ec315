"""Events of an episode's life and of each agent's: started, restarted, escalated,
finished; tasks, model turns, answers, handoffs, delegations, failures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from ._base import Event

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


# --- an agent stream ----------------------------------------------------------------


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
