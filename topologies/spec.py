"""How a user describes a fleet's parts: frozen specs of agents, supervisors and their limits.

A ``Topology`` (``topology.py``) is a root ``Supervisor`` over ``Agent`` specs. Each agent
names its role (the tools it is granted, at which risk tier, with which approval
thresholds), its model, its tools, its rails (``rails.py``), its budget and the agents it
may hand off to. ``None`` means "no limit" wherever a limit is optional.

Validation (``validation.py``) collects every problem, each with its path
(``refund_desk.root.children[1].grants[0].tool: ...``), and raises one ``TopologyError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from tether.agents.builtins import builtins_of
from tether.agents.conduct import Conduct, Verifier
from tether.agents.model import Model, Price
from tether.agents.tools import Tool

from .rails import Rail

Tier = Literal["low", "medium", "high"]
TIERS: tuple[Tier, ...] = ("low", "medium", "high")
TIER_RANK: dict[str, int] = {tier: i for i, tier in enumerate(TIERS)}
"""How strict a tier is: low 0, medium 1, high 2."""


@dataclass(frozen=True)
class Budget:
    """What an agent or a supervisor may spend. A child's budget is carved from its parent's."""

    steps: int | None = None
    """Governed actions (tool calls that pass the boundaries); None = no limit."""
    tokens: int | None = None
    """Model tokens, input and output, as the model reports them; each call first
    reserves its context's estimate and fails the agent if that is not left. None = no
    limit."""
    cost: Decimal | None = None
    """Model spend in dollars, priced by each agent's ``price`` from the usage its model
    reports; each call first reserves what its prompt alone will cost. None = no limit."""
    spawns: int | None = None
    """For a supervisor: how many agents under it may be started in one episode (an
    agent's first task starts it; restarts and later tasks do not). A handoff that would
    start one more is denied at the budget stage, and ``Host.start`` refuses a batch that
    does not fit. None = no limit (a nested supervisor is still bound by its parent's)."""
    ttl_s: float | None = None
    """Time to live, in seconds of the episode's active time: an agent's counts from its
    first task, a supervisor's from the episode's start, and time the episode waits for
    a person does not count. Past it the agent fails (checked at each model call and
    each action, against recorded times). A child's deadline is never later than its
    parent's; None = no limit of its own (a child still has its parent's deadline)."""


@dataclass(frozen=True)
class ApprovalThreshold:
    """Above this value of a numeric argument, a person must approve the call."""

    field: str
    """The argument compared (``amount``)."""
    above: Decimal
    """Values strictly greater need approval."""
    tier: Tier = "high"
    """The tier the approval is asked at."""


def default_tier(tool: Tool) -> Tier:
    """Tier from the tool's annotations: read-only → low, destructive → high, else medium."""
    if tool.read_only:
        return "low"
    return "high" if tool.destructive else "medium"


@dataclass(frozen=True)
class Approvals:
    """How long a request may wait for a person; past its deadline it is denied, recorded
    as ``timed_out`` (distinct from a person's ``denied``)."""

    medium: timedelta | None = timedelta(hours=24)
    """Deadline of a medium-tier request, which joins the digest a person decides in one
    batch; None = no deadline."""
    high: timedelta | None = timedelta(hours=4)
    """Deadline of a high-tier request, for which a person is interrupted now."""

    def deadline(self, tier: str) -> timedelta | None:
        return self.high if tier == "high" else self.medium


@dataclass(frozen=True)
class Grant:
    """Permission to use one tool, at a risk tier, maybe with an approval threshold."""

    tool: str
    """The tool's name."""
    tier: Tier | None = None
    """Risk tier of a call; None derives it: read-only → low, destructive → high, else medium."""
    approval: ApprovalThreshold | None = None
    """Ask a person when an argument passes a threshold."""
    secrets: tuple[str, ...] = ()
    """Names of the secrets whose handles (``secret://name``) the tool may receive."""


@dataclass(frozen=True)
class Role:
    """What an agent is allowed to do: a name and its grants (least privilege)."""

    name: str
    """The role's name, as recorded in decisions."""
    grants: tuple[Grant, ...] = ()
    """The tools the role may use; anything else is denied."""


Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")
RestartType = Literal["permanent", "transient", "temporary"]
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")


@dataclass(frozen=True)
class Restarts:
    """How a supervisor restarts the agents that fail (OTP's semantics, for agents).

    An agent's only normal exits are finishing and handing off, so ``permanent`` and
    ``transient`` agents are both restarted when they fail; ``temporary`` ones never are.
    A failure for want of budget is not restarted: a restart could not find more.
    """

    strategy: Strategy = "one_for_one"
    """one_for_one: restart the failed agent alone. one_for_all: restart the episode's
    work from its entry agent. rest_for_one: restart the failed agent and those started
    after it; agents run one at a time, so that is the failed agent alone."""
    max_restarts: int = 3
    """Restarts allowed within ``period_s``; one more and the supervisor gives up."""
    period_s: float = 60.0
    """The window the intensity is counted over, in seconds of recorded time."""
    backoff_s: float = 0.5
    """The wait before the first restart; each further restart in the window waits up to
    twice as long (with jitter)."""
    max_backoff_s: float = 30.0
    """The longest wait before a restart."""
    escalate: bool = True
    """For the root: when it gives up (past the intensity, or on a failure no supervisor
    restarts), ask a person through the inbox — retry with more budget, accept the
    partial result, or abort — and let the episode wait. False: the episode fails with
    the reason. (A nested supervisor always gives up to its own supervisor.)"""


@dataclass(frozen=True)
class Retries:
    """How an agent's model calls retry failures the model calls transient (a rate limit,
    a timeout, a 5xx): bounded, with exponential backoff and jitter, the attempts
    recorded with the turn."""

    attempts: int = 3
    """Calls a turn may take, the first included; 1 = no retry."""
    backoff_s: float = 0.5
    """The scale of the first wait, in seconds; each retry may wait up to twice as long."""
    max_backoff_s: float = 8.0
    """The longest wait, in seconds."""


@dataclass(frozen=True)
class Stuck:
    """When an agent counts as stuck: it fails, recorded with the reason, and what comes
    next is its supervisor's decision."""

    repeats: int | None = 5
    """The same tool called with the same arguments this many times in a row: the last of
    them is refused. None = not watched."""
    no_progress_steps: int | None = None
    """Governed actions in a row without recorded progress (the built-in
    ``record_progress`` tool, which the agent then has, also keeps its best result so
    far). None = not watched."""
    rejected_answers: int | None = 3
    """Answers in a row that failed the agent's verifiers. None = not watched."""


@dataclass(frozen=True)
class Agent:
    """One agent of a fleet."""

    name: str
    """Unique within the topology; addresses the agent."""
    role: Role
    """Its grants."""
    model: Model
    """What thinks for it."""
    tools: tuple[Tool, ...] = ()
    """Tools it knows; it may only call those its role grants."""
    instructions: str = ""
    """Its system message."""
    rails: tuple[Rail, ...] = ()
    """Boundaries on its tool arguments."""
    budget: Budget = field(default_factory=Budget)
    """What it may spend; carved from its supervisor's budget."""
    handoffs: tuple[str, ...] = ()
    """Agents it may hand off to (the built-in ``handoff`` tool is granted for them)."""
    peers: tuple[str, ...] = ()
    """Agents it may message (the built-in ``send_message`` tool is granted for them);
    any agent reads the messages sent to it before its next model call."""
    workers: tuple[str, ...] = ()
    """Agents it may give work to and wait for (agents as tools: the built-in
    ``delegate`` tool is granted for them). Its supervisor runs each worker on the task
    and feeds the answer back as the call's result; a worker that fails after its
    restarts is reported to it as failed."""
    max_turns: int = 10
    """Model calls per task before the agent fails with its best so far."""
    context_tokens: int | None = None
    """Working-memory bound in estimated tokens (ceil(chars / 4) per message + 4); past
    it the oldest turns are compacted into a summary. None = no bound."""
    stuck: Stuck = field(default_factory=Stuck)
    """When the agent counts as stuck and fails."""
    retries: Retries = field(default_factory=Retries)
    """How its model calls retry transient failures."""
    restart: RestartType = "transient"
    """Whether its supervisor restarts it when it fails (temporary: never)."""
    memory: tuple[str, ...] = ()
    """Its org-memory scopes: subjects whose facts go into its context at the start of
    each task, as templates filled from the task or the episode input a handoff carries
    (``"customer:{customer}"``, or a fixed
    ``"freeze:global"``). What was recalled is recorded with the task."""
    verifiers: tuple[Verifier | str, ...] = ()
    """Checks on its final answer: functions ``check(answer, task) -> reason | None``,
    and names of agents that check it once the functions pass it (their supervisor runs
    them on ``{"answer", "task"}``; each approves by answering ``approve``, and any other
    answer is its reason to reject). A rejected answer is fed back to the agent as a
    signal and it goes on; it is recorded, and counts toward ``stuck.rejected_answers``."""
    price: Price | None = None
    """What its model's tokens cost; needed when a budget limits cost. None = its model's
    ``price`` if it has one (``OpenAIModel(price=...)``), else unpriced."""
    isolated: bool = False
    """Run on a Ray host actor of its own (a heavy or untrusted agent) instead of the host
    actor the fleet's other agents share."""
    node: str | None = None
    """For an isolated agent: prefer a node started with this custom resource
    (``ray start --resources='{"gpu_box": 1}'``); when no such node is alive, any node."""

    def conduct(self) -> Conduct:
        """How its loop works, as this spec declares it."""
        return Conduct(
            instructions=self.instructions,
            max_turns=self.max_turns,
            context_tokens=self.context_tokens,
            stuck_repeats=self.stuck.repeats,
            stuck_without_progress=self.stuck.no_progress_steps,
            stuck_rejections=self.stuck.rejected_answers,
            model_attempts=self.retries.attempts,
            backoff_s=self.retries.backoff_s,
            max_backoff_s=self.retries.max_backoff_s,
            verifiers=tuple(v for v in self.verifiers if not isinstance(v, str)),
            verifier_agents=tuple(v for v in self.verifiers if isinstance(v, str)),
        )

    def all_tools(self) -> dict[str, Tool]:
        """Its tools by name, with the built-in handoff tool when it may hand off and the
        built-in page_back tool when its working memory is bounded."""
        given = self.tools if isinstance(self.tools, tuple) else ()
        found = {t.name: t for t in given if isinstance(t, Tool)}
        for b in builtins_of(self):
            found.setdefault(b.tool.name, b.tool)
        return found


@dataclass(frozen=True)
class Supervisor:
    """A supervisor over agents; the root of a topology is one."""

    name: str
    """Its name, unique among the topology's agents and supervisors."""
    children: tuple[Agent | Supervisor, ...]
    """The agents and supervisors it supervises, started in order."""
    budget: Budget = field(default_factory=Budget)
    """The budget its children's budgets are carved from."""
    entry: str | None = None
    """The child that receives an episode's input (or its work, for a nested
    supervisor); None = the first child."""
    restarts: Restarts = field(default_factory=Restarts)
    """How it restarts the children that fail. Past its intensity it gives up, and its
    own supervisor decides (restarting its work counts against that one's intensity);
    the root asks a person."""
    role: Role | None = None
    """The most its children may be granted: each child's grants can only narrow these
    (the same tools or fewer, tiers as strict or stricter, approval thresholds as low or
    lower, the same secrets or fewer). None = no bound."""


def entry_agent(child: Agent | Supervisor) -> str:
    """The agent that receives a child's work: an agent itself; a supervisor's entry
    child (its first when it names none), or that child's entry, down the tree. (Shapes
    ask before the tree is validated: a malformed supervisor answers its own name.)"""
    if isinstance(child, Agent):
        return child.name
    if not isinstance(child.children, tuple) or not child.children:
        return str(child.name)
    first = child.entry or child.children[0].name
    found = next((c for c in child.children if c.name == first), None)
    return entry_agent(found) if isinstance(found, Agent | Supervisor) else str(first)
