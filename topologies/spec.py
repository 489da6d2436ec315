"""How a user describes a fleet: frozen specs, validated as a whole before anything runs.

A ``Topology`` is a root ``Supervisor`` over ``Agent`` specs. Each agent names its role
(the tools it is granted, at which risk tier, with which approval thresholds), its model,
its tools, its rails, its budget and the agents it may hand off to. ``None`` means "no
limit" wherever a limit is optional.

Validation collects every problem, each with its path
(``refund_desk.root.children[1].grants[0].tool: ...``), and raises one ``TopologyError``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from tether.agents.builtins import BUILTINS, builtins_of
from tether.agents.loop import Verifier
from tether.agents.model import Model, Price
from tether.agents.tools import Tool
from tether.memory.errors import TopologyError
from tether.memory.org import FactPolicy

from .policy import ORIGINS, Policy
from .shapecheck import type_problems

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


@dataclass(frozen=True)
class AllowedValues:
    """Rail: an argument must be one of a set of values (recipients, hosts, paths)."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument."""
    values: tuple[str, ...] = ()
    """Values allowed outright."""
    from_context: str | None = None
    """A dotted path into the episode's trusted context whose value is also allowed
    (``customer.email``): the set comes from records, never from text."""

    @property
    def rule_id(self) -> str:
        return f"allow:{self.tool}.{self.field}"


@dataclass(frozen=True)
class SpendCap:
    """Rail: caps on a numeric argument, per call and summed over the agent's episode."""

    tool: str
    """The tool whose argument is capped."""
    field: str
    """The argument (``amount``)."""
    per_call: Decimal | None = None
    """Largest value one call may carry; None = no per-call cap."""
    per_episode: Decimal | None = None
    """Largest sum over the agent's executed calls in the episode; None = no cap."""
    per_fleet: Decimal | None = None
    """Largest sum over every agent's executed calls of this tool in the episode: one cap
    the whole fleet shares, checked before each call; None = no cap."""

    @property
    def rule_id(self) -> str:
        return f"cap:{self.tool}.{self.field}"


@dataclass(frozen=True)
class AllowedDomains:
    """Rail: the domain of an email address, or the host of a URL, must be one of these
    (or a subdomain of one)."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``to``, ``url``)."""
    domains: tuple[str, ...]
    """Domains allowed (``example.com`` also allows ``mail.example.com``)."""

    @property
    def rule_id(self) -> str:
        return f"domain:{self.tool}.{self.field}"


@dataclass(frozen=True)
class AllowedPaths:
    """Rail: a file path must lie inside one of these directories, once ``..`` and
    symbolic links are resolved."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``path``)."""
    roots: tuple[str, ...]
    """Directories allowed, with everything below them."""

    @property
    def rule_id(self) -> str:
        return f"path:{self.tool}.{self.field}"


@dataclass(frozen=True)
class Forbidden:
    """Rail: an argument must not be one of these values, nor match these patterns."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument."""
    values: tuple[str, ...] = ()
    """Values refused (compared without regard to case)."""
    patterns: tuple[str, ...] = ()
    """Regular expressions refused wherever they match in the value."""

    @property
    def rule_id(self) -> str:
        return f"forbid:{self.tool}.{self.field}"


@dataclass(frozen=True)
class RateLimit:
    """Rail: at most ``calls`` executed calls of a tool by the agent within any
    ``per_s`` seconds."""

    tool: str
    """The tool."""
    calls: int
    """Calls allowed in the window."""
    per_s: float
    """The window, in seconds."""

    @property
    def rule_id(self) -> str:
        return f"rate:{self.tool}"


@dataclass(frozen=True)
class ReadOnly:
    """Rail: the agent may use only read-only tools among those matching ``tool`` (a glob:
    ``crm_*`` for one integration, ``*`` for all)."""

    tool: str = "*"
    """Which tools (a glob)."""

    @property
    def rule_id(self) -> str:
        return f"read-only:{self.tool}"


@dataclass(frozen=True)
class Provenance:
    """Rail: an argument must come from where the rule says (``runtime/provenance.py``):
    the operator's task, the system's records, never text a third party wrote."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``recipient``)."""
    origins: tuple[str, ...] = ("operator", "system")
    """Origins allowed: operator, system, agent, untrusted, model."""
    source: str | None = None
    """Also demand this source, or a part of it (``context.customer``: the customer
    record; ``result of lookup_order``: that tool's results)."""

    @property
    def rule_id(self) -> str:
        return f"origin:{self.tool}.{self.field}"


Rail = (
    AllowedValues
    | SpendCap
    | Provenance
    | AllowedDomains
    | AllowedPaths
    | Forbidden
    | RateLimit
    | ReadOnly
)
RAILS = (AllowedValues, SpendCap, Provenance, AllowedDomains, AllowedPaths, Forbidden, RateLimit)
"""Rails on one tool's argument (or, for RateLimit, its calls); ReadOnly takes a glob."""


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


@dataclass(frozen=True)
class Topology:
    """A fleet: a named tree of supervisors and agents. Constructing one validates it."""

    name: str
    """The fleet's name."""
    root: Supervisor
    """The root supervisor."""
    facts: FactPolicy = field(default_factory=FactPolicy)
    """How conflicting org-memory facts from different agents are settled."""
    untrusted_input: tuple[str, ...] = ()
    """Dotted paths of the episode's input that a third party wrote (``ticket.text``):
    untrusted content for argument provenance, though the operator passed them on."""
    approvals: Approvals = field(default_factory=Approvals)
    """Deadlines of approval requests, per tier."""
    policy: Policy = field(default_factory=Policy)
    """Rules on top of the roles' grants (``topologies/policy.py``)."""

    def __post_init__(self) -> None:
        problems = problems_of(self)
        if problems:
            raise TopologyError(problems)

    @property
    def entry(self) -> str:
        """The agent that receives an episode's input."""
        return self.entry_of(self.root)

    def entry_of(self, supervisor: Supervisor) -> str:
        """The agent that receives a supervisor's work: its entry child, or that child's
        entry when the child is a supervisor."""
        return entry_agent(supervisor)

    def agents(self) -> dict[str, Agent]:
        """Every agent of the tree by name, depth first in declaration order (built once:
        a fleet may have thousands, and the runtime asks often)."""
        return self._tree()[0]

    def supervisors(self) -> dict[str, Supervisor]:
        """Every supervisor of the tree by name, the root first."""
        return self._tree()[1]

    def chain(self, name: str) -> list[Supervisor]:
        """The supervisors above an agent or a supervisor, its own first, the root last."""
        return self._tree()[2][name]

    def under(self, supervisor: str) -> frozenset[str]:
        """The agents in a supervisor's subtree."""
        return self._tree()[3][supervisor]

    def _tree(
        self,
    ) -> tuple[
        dict[str, Agent],
        dict[str, Supervisor],
        dict[str, list[Supervisor]],
        dict[str, frozenset[str]],
    ]:
        found = self.__dict__.get("_walked")
        if found is None:
            agents: dict[str, Agent] = {}
            supervisors: dict[str, Supervisor] = {}
            chains: dict[str, list[Supervisor]] = {}
            under: dict[str, set[str]] = {}

            def walk(s: Supervisor, above: list[Supervisor]) -> None:
                supervisors[s.name] = s
                under[s.name] = set()
                mine = [s, *above]
                for child in s.children:
                    chains[child.name] = mine
                    if isinstance(child, Supervisor):
                        walk(child, mine)
                    else:
                        agents[child.name] = child
                        for sup in mine:
                            under[sup.name].add(child.name)

            walk(self.root, [])
            chains[self.root.name] = []
            found = (agents, supervisors, chains, {k: frozenset(v) for k, v in under.items()})
            object.__setattr__(self, "_walked", found)
        return found

    def policy_hash(self) -> str:
        """The SHA-256 of everything that decides what the fleet may do: each agent's role
        and grants, rails, handoff targets, budget, and its tools' annotations (which set
        default tiers). Audit records carry it, so a decision names the policy version
        that made it; changing a prompt or a model does not change it."""
        document = [
            {
                "agent": a.name,
                "role": asdict(a.role),
                "rails": [{"kind": type(r).__name__, **asdict(r)} for r in a.rails],
                "handoffs": list(a.handoffs),
                "peers": list(a.peers),
                "workers": list(a.workers),
                "budget": asdict(a.budget),
                "price": asdict(a.price) if isinstance(a.price, Price) else None,
                "stuck": asdict(a.stuck),
                "tools": [
                    {
                        "name": t.name,
                        "read_only": t.read_only,
                        "destructive": t.destructive,
                        "idempotent": t.idempotent,
                        "open_world": t.open_world,
                    }
                    for t in a.all_tools().values()
                ],
            }
            for a in self.agents().values()
        ]
        text = json.dumps(
            {
                "agents": document,
                "bound": asdict(self.root.role) if self.root.role is not None else None,
                "supervisors": [
                    {
                        "name": s.name,
                        "parent": self.chain(s.name)[0].name if self.chain(s.name) else None,
                        "budget": asdict(s.budget),
                        "role": asdict(s.role) if s.role is not None else None,
                    }
                    for s in self.supervisors().values()
                ],
                "approvals": asdict(self.approvals),
                "policy": asdict(self.policy),
            },
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def with_agents(self, change: Callable[[Agent], Agent]) -> Topology:
        """The same fleet with each agent replaced by ``change(agent)`` (its model swapped
        for a real one, or for recorded turns), at any depth of the tree."""

        def under(s: Supervisor) -> Supervisor:
            children = tuple(
                under(c) if isinstance(c, Supervisor) else change(c) for c in s.children
            )
            return dataclasses.replace(s, children=children)

        return dataclasses.replace(self, root=under(self.root))


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


def problems_of(topology: Topology) -> list[str]:
    """Every problem with a topology, each with its path; empty when it is valid."""
    name = topology.name if isinstance(topology.name, str) and topology.name else "topology"
    try:
        return _problems_of(topology)
    except Exception as e:  # a field of a kind validation did not expect: say which
        return _by_type(e, topology, Topology, name)


def _by_type(e: Exception, value: Any, cls: type, path: str) -> list[str]:
    """The fields of ``value`` that do not have their annotated types; if none is found,
    what went wrong, so nothing escapes as anything but a ``TopologyError``."""
    found = type_problems(value, cls, path)
    return found or [f"{path}: could not be checked ({type(e).__name__}: {e})"]


def _problems_of(topology: Topology) -> list[str]:
    out: list[str] = []
    name = topology.name if isinstance(topology.name, str) and topology.name else "topology"
    if not isinstance(topology.name, str) or not topology.name.strip():
        out.append("topology.name: must be a non-empty string")
    root = topology.root
    path = f"{name}.root"
    if not isinstance(root, Supervisor):
        return [*out, f"{path}: must be a Supervisor, got {type(root).__name__}"]
    tree = _Tree()
    out += _supervisor_problems(root, path, None, [], tree)
    known = {a.name for a, _ in tree.agents if isinstance(a.name, str)}
    for agent, p in tree.agents:
        for kind, targets in (
            ("handoffs", agent.handoffs),
            ("peers", agent.peers),
            ("workers", agent.workers),
            ("verifiers", agent.verifiers),  # (its functions are checked with the agent)
        ):
            if not isinstance(targets, tuple):
                if kind != "verifiers":
                    out.append(f"{p}.{kind}: must be a tuple of agent names")
                continue
            for j, target in enumerate(targets):
                if kind == "verifiers" and not isinstance(target, str):
                    continue
                if target not in known:
                    out.append(
                        f"{p}.{kind}[{j}]: unknown agent {target!r}; choose one of {_some(known)}"
                    )
                elif target == agent.name:
                    verb = {
                        "handoffs": "hand off to",
                        "peers": "message",
                        "workers": "delegate to",
                        "verifiers": "verify",
                    }[kind]
                    out.append(f"{p}.{kind}[{j}]: an agent cannot {verb} itself")
    out += _delegation_cycles(tree.agents)
    if not isinstance(topology.policy, Policy):
        return [*out, f"{name}.policy: must be a Policy (or Policy.load('policy.toml'))"]
    out += topology.policy.problems(f"{name}.policy")
    tools = {t for a, _ in tree.agents for t in a.all_tools()}
    for i, rule in enumerate(topology.policy.rules):
        for field_name, known_names in (("tools", tools), ("agents", known)):
            for pattern in getattr(rule, field_name, ()):
                if isinstance(pattern, str) and not fnmatch.filter(sorted(known_names), pattern):
                    out.append(
                        f"{name}.policy.rules[{i}].{field_name}: {pattern!r} matches no "
                        f"{field_name[:-1]} of the topology; it has {_some(known_names)}"
                    )
    return out


def _delegation_cycles(agents: list[tuple[Agent, str]]) -> list[str]:
    """Delegations that come back to the delegator: it waits for its workers, so work
    that reaches it again (through more delegations or handoffs) could never be done."""
    onward: dict[str, set[str]] = {}
    for a, _ in agents:
        if isinstance(a.name, str):
            targets = (*_names(a.handoffs), *_names(a.workers), *_names(a.verifiers))
            onward.setdefault(a.name, set()).update(targets)
    out = []
    for a, p in agents:
        asked = [
            (kind, j, name)
            for kind in ("workers", "verifiers")
            if isinstance(getattr(a, kind), tuple)
            for j, name in enumerate(getattr(a, kind))
            if isinstance(name, str)
        ]
        for kind, j, worker in asked:
            seen, todo = set(), [worker]
            while todo:
                n = todo.pop()
                if n in seen:
                    continue
                seen.add(n)
                todo += onward.get(n, ())
            if a.name in seen:
                out.append(
                    f"{p}.{kind}[{j}]: work delegated to {worker!r} can come back to "
                    f"{a.name!r}, which waits for it (a cycle); remove {a.name!r} from "
                    "what that worker may hand off or delegate to"
                )
    return out


def _names(given: Any) -> tuple[str, ...]:
    return tuple(n for n in given if isinstance(n, str)) if isinstance(given, tuple) else ()


@dataclass
class _Tree:
    """What validation has seen so far: agents and every name, with their paths."""

    agents: list[tuple[Agent, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


def _supervisor_problems(
    sup: Supervisor, path: str, parent: Budget | None, bounds: list[Role], tree: _Tree
) -> list[str]:
    out = _budget_problems(sup.budget, f"{path}.budget")
    if not out and parent is not None:
        out += _carve_problems(sup.budget, parent, f"{path}.budget", "supervisor")
    out += _restarts_problems(sup.restarts, f"{path}.restarts")
    if isinstance(sup.budget, Budget) and type(sup.budget.spawns) is int and sup.budget.spawns == 0:
        out.append(f"{path}.budget.spawns: must be at least 1 (its work starts with an agent)")
    if sup.role is not None and not isinstance(sup.role, Role):
        out.append(f"{path}.role: must be a Role or None")
    roles = [*bounds, sup.role] if isinstance(sup.role, Role) else bounds
    if not isinstance(sup.children, tuple) or not sup.children:
        return [*out, f"{path}.children: a supervisor needs at least one child (a tuple)"]
    mine: set[str] = set()
    for i, child in enumerate(sup.children):
        p = f"{path}.children[{i}]"
        if not isinstance(child, Agent | Supervisor):
            out.append(f"{p}: must be an Agent or a Supervisor, got {type(child).__name__}")
            continue
        if not isinstance(child.name, str) or not child.name.strip():
            if isinstance(child, Supervisor):  # (an agent's name is checked with the agent)
                out.append(f"{p}.name: must be a non-empty string")
        elif child.name in tree.names:
            out.append(
                f"{p}.name: duplicate name {child.name!r}; agents and supervisors need unique names"
            )
        if isinstance(child.name, str):
            tree.names.add(child.name)
            mine.add(child.name)
        try:
            if isinstance(child, Supervisor):
                out += _supervisor_problems(child, p, sup.budget, roles, tree)
                continue
            tree.agents.append((child, p))
            out += _agent_and_bounds(child, p, sup.budget, roles)
        except Exception as e:  # a field of a kind validation did not expect: say which
            out += _by_type(e, child, type(child), p)
    if sup.entry is not None and (not isinstance(sup.entry, str) or sup.entry not in mine):
        out.append(f"{path}.entry: unknown child {sup.entry!r}; choose one of {_some(mine)}")
    return out


def _agent_and_bounds(agent: Agent, p: str, parent: Budget, roles: list[Role]) -> list[str]:
    """An agent's own problems, and how its grants widen the roles above it."""
    cost = next((b.cost for b in (agent.budget, parent) if isinstance(b, Budget) and b.cost), None)
    out = _agent_problems(agent, p, parent, cost)
    if isinstance(agent.role, Role):
        found = [x for bound in roles for x in _narrowing_problems(agent, bound, p)]
        out += list(dict.fromkeys(found))
    return out


def _some(names: Any) -> str:
    """Names to choose from, in a message: all of them, or the first few of thousands."""
    ordered = sorted(names)
    if len(ordered) <= 20:
        return str(ordered)
    return f"{str(ordered[:20])[:-1]}, ... and {len(ordered) - 20} more]"


def _agent_problems(
    agent: Agent, p: str, parent: Budget, cost_limit: Decimal | None = None
) -> list[str]:
    out: list[str] = []
    if not isinstance(agent.name, str) or not agent.name.strip():
        out.append(f"{p}.name: must be a non-empty string")
    if not isinstance(agent.model, Model):
        out.append(f"{p}.model: missing model; give a Model such as ScriptedModel([...])")
    if agent.context_tokens is not None and (
        not isinstance(agent.context_tokens, int) or agent.context_tokens < 64
    ):
        out.append(
            f"{p}.context_tokens: must be an integer of at least 64 or None, got "
            f"{agent.context_tokens!r}"
        )
    if not isinstance(agent.stuck, Stuck):
        out.append(f"{p}.stuck: must be a Stuck")
    else:
        for name, low in (("repeats", 2), ("no_progress_steps", 1), ("rejected_answers", 1)):
            value = getattr(agent.stuck, name)
            if value is not None and (not isinstance(value, int) or value < low):
                out.append(f"{p}.stuck.{name}: must be an integer of at least {low} or None")
    if not isinstance(agent.retries, Retries):
        out.append(f"{p}.retries: must be a Retries")
    elif not isinstance(agent.retries.attempts, int) or agent.retries.attempts < 1:
        out.append(f"{p}.retries.attempts: must be an integer of at least 1")
    elif not agent.retries.backoff_s >= 0 or not agent.retries.max_backoff_s >= 0:
        out.append(f"{p}.retries: backoff_s and max_backoff_s must be 0 or more seconds")
    if not isinstance(agent.isolated, bool):
        out.append(f"{p}.isolated: must be True or False")
    if agent.node is not None and (not isinstance(agent.node, str) or not agent.node.strip()):
        out.append(f"{p}.node: must be the name of a custom resource of a Ray node, or None")
    elif agent.node is not None and agent.isolated is not True:
        out.append(f"{p}.node: only an isolated agent is placed on a node; add isolated=True")
    if not isinstance(agent.memory, tuple) or not all(
        isinstance(m, str) and m.strip() for m in agent.memory
    ):
        out.append(f"{p}.memory: must be a tuple of subjects, e.g. ('customer:{{customer}}',)")
    if not isinstance(agent.verifiers, tuple) or not all(
        callable(v) or (isinstance(v, str) and v.strip()) for v in agent.verifiers
    ):
        out.append(
            f"{p}.verifiers: must be a tuple of functions check(answer, task) -> reason or "
            "None, and names of verifier agents"
        )
    if agent.restart not in RESTART_TYPES:
        out.append(f"{p}.restart: {agent.restart!r} is not a restart type; use {RESTART_TYPES}")
    if not isinstance(agent.max_turns, int) or agent.max_turns < 1:
        out.append(f"{p}.max_turns: must be a positive integer, got {agent.max_turns!r}")
    budget_problems = _budget_problems(agent.budget, f"{p}.budget")
    out += budget_problems
    if isinstance(agent.budget, Budget) and agent.budget.spawns is not None:
        out.append(
            f"{p}.budget.spawns: limits the agents a supervisor starts; set it on the "
            "agent's supervisor"
        )
    if not budget_problems and isinstance(parent, Budget):
        out += _carve_problems(agent.budget, parent, f"{p}.budget", "agent")
    if agent.price is not None and not isinstance(agent.price, Price):
        out.append(f"{p}.price: must be a Price(input_per_mtok=..., output_per_mtok=...)")
    elif isinstance(agent.price, Price):
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(agent.price, name)
            if not _is_amount(value):
                out.append(
                    f"{p}.price.{name}: must be a Decimal or an integer of 0 or more "
                    f"dollars, got {value!r}"
                )
    if (
        cost_limit is not None
        and agent.price is None
        and getattr(agent.model, "price", None) is None
    ):
        out.append(
            f"{p}.price: its budget limits cost ({cost_limit} dollars) but it has no price; "
            "give Agent(price=Price(input_per_mtok=..., output_per_mtok=...))"
        )
    tools = agent.all_tools() if isinstance(agent.tools, tuple) else {}
    if not isinstance(agent.tools, tuple):
        out.append(f"{p}.tools: must be a tuple of Tool")
    for i, t in enumerate(agent.tools if isinstance(agent.tools, tuple) else ()):
        if not isinstance(t, Tool):
            out.append(f"{p}.tools[{i}]: must be a Tool (declare it with @tool)")
    if not isinstance(agent.role, Role):
        out.append(f"{p}.role: must be a Role")
        return out
    granted: set[str] = set()
    for i, g in enumerate(agent.role.grants):
        gp = f"{p}.role.grants[{i}]"
        if not isinstance(g, Grant):
            out.append(f"{gp}: must be a Grant")
            continue
        granted.add(g.tool)
        if g.tool not in tools:
            out.append(f"{gp}.tool: {_unknown_tool(g.tool, tools)}")
        if g.tier is not None and g.tier not in TIERS:
            out.append(f"{gp}.tier: {g.tier!r} is not a tier; use low, medium or high")
        if g.approval is not None:
            if g.approval.tier not in TIERS:
                out.append(f"{gp}.approval.tier: {g.approval.tier!r} is not a tier")
            if g.tool in tools and g.approval.field not in tools[g.tool].args.model_fields:
                out.append(
                    f"{gp}.approval.field: tool {g.tool!r} has no argument {g.approval.field!r}"
                )
    for i, rail in enumerate(agent.rails):
        rp = f"{p}.rails[{i}]"
        if isinstance(rail, ReadOnly):
            if not fnmatch.filter(sorted(tools), rail.tool):
                out.append(f"{rp}.tool: {rail.tool!r} matches none of the agent's tools")
            continue
        if not isinstance(rail, RAILS):
            names = ", ".join(r.__name__ for r in (*RAILS, ReadOnly))
            out.append(f"{rp}: must be a rail: {names}")
            continue
        if rail.tool not in tools:
            out.append(f"{rp}.tool: {_unknown_tool(rail.tool, tools)}")
        elif isinstance(rail, RateLimit):
            if not isinstance(rail.calls, int) or rail.calls < 1 or not rail.per_s > 0:
                out.append(f"{rp}: give calls >= 1 and per_s > 0")
        elif rail.field not in tools[rail.tool].args.model_fields:
            out.append(
                f"{rp}.field: tool {rail.tool!r} has no argument {rail.field!r}; it has "
                f"{sorted(tools[rail.tool].args.model_fields)}"
            )
        if isinstance(rail, AllowedValues) and not rail.values and not rail.from_context:
            out.append(f"{rp}: allows nothing; give values or from_context")
        if isinstance(rail, SpendCap) and (rail.per_call, rail.per_episode, rail.per_fleet) == (
            None,
            None,
            None,
        ):
            out.append(f"{rp}: caps nothing; give per_call, per_episode or per_fleet")
        if isinstance(rail, Forbidden):
            for k, pattern in enumerate(rail.patterns):
                try:
                    re.compile(pattern)
                except re.error as e:
                    out.append(f"{rp}.patterns[{k}]: not a regular expression ({e})")
        if isinstance(rail, AllowedDomains | AllowedPaths) and not (
            rail.domains if isinstance(rail, AllowedDomains) else rail.roots
        ):
            out.append(f"{rp}: allows nothing; name at least one")
        if isinstance(rail, Provenance):
            unknown = [o for o in rail.origins if o not in ORIGINS]
            if unknown or not rail.origins:
                out.append(
                    f"{rp}.origins: {list(rail.origins)} must name one or more of {list(ORIGINS)}"
                )
    return out


def _unknown_tool(name: str, tools: dict[str, Tool]) -> str:
    """Why ``name`` is not one of the agent's tools, and how to make it one."""
    found = BUILTINS.get(name)
    if found is not None:
        return f"unknown tool {name!r}; it is built in: give the agent {found.how}"
    return f"unknown tool {name!r}; the agent's tools are {sorted(tools)}"


def _narrowing_problems(agent: Agent, bound: Role, p: str) -> list[str]:
    """How the agent's grants widen its supervisor's role, each with its path."""
    out: list[str] = []
    tools = agent.all_tools()
    parents = {g.tool: g for g in bound.grants}
    for i, g in enumerate(agent.role.grants):
        gp = f"{p}.role.grants[{i}]"
        parent = parents.get(g.tool)
        head = f"{gp}: grant {g.tool!r} of agent {agent.name!r} widens its supervisor's role"
        if parent is None:
            out.append(f"{head} {bound.name!r}, which does not grant {g.tool!r}")
            continue
        tool = tools.get(g.tool)
        if tool is None:
            continue  # reported as an unknown tool
        mine, theirs = g.tier or default_tier(tool), parent.tier or default_tier(tool)
        if TIER_RANK.get(mine, 0) < TIER_RANK.get(theirs, 0):
            out.append(f"{head}: tier {mine} is looser than the supervisor's {theirs}")
        if parent.approval is not None:
            t = parent.approval
            if g.approval is None or g.approval.field != t.field or g.approval.above > t.above:
                out.append(
                    f"{head}: the supervisor asks a person above {t.field} {t.above}; "
                    "the agent must ask at that threshold or lower"
                )
        extra = sorted(set(g.secrets) - set(parent.secrets))
        if extra:
            out.append(f"{head}: secrets {extra} are not granted to the supervisor")
    return out


def _restarts_problems(r: Any, p: str) -> list[str]:
    if not isinstance(r, Restarts):
        return [f"{p}: must be a Restarts"]
    out = []
    if r.strategy not in STRATEGIES:
        out.append(f"{p}.strategy: {r.strategy!r} is not a strategy; use {STRATEGIES}")
    if not isinstance(r.max_restarts, int) or r.max_restarts < 0:
        out.append(f"{p}.max_restarts: must be an integer of 0 or more")
    for name in ("period_s", "backoff_s", "max_backoff_s"):
        value = getattr(r, name)
        if not isinstance(value, int | float) or value < 0:
            out.append(f"{p}.{name}: must be 0 or more seconds")
    return out


BUDGET_UNITS = ("steps", "tokens", "cost", "spawns", "ttl_s")
INHERITED = ("spawns", "ttl_s")
"""Units a child without a limit of its own takes from its parent (the parent's ledger
or deadline binds it anyway)."""


def _carve_problems(mine: Budget, parent: Budget, p: str, kind: str) -> list[str]:
    """How a child's budget (an agent's or a supervisor's) is not carved from its
    parent's: a unit limited above and unlimited here, or more than the parent has."""
    out = []
    for unit in BUDGET_UNITS:
        ours, theirs = getattr(mine, unit), getattr(parent, unit)
        if theirs is None or not isinstance(theirs, int | Decimal | float):
            continue
        if ours is None and unit in INHERITED:
            continue
        if unit == "spawns" and kind == "agent":
            continue  # (an agent's spawns are refused on their own, below)
        if ours is None:
            out.append(
                f"{p}.{unit}: unlimited under a supervisor limited to {theirs}; "
                f"give the {kind} a budget of {unit}"
            )
        elif ours is not None and ours > theirs:
            out.append(
                f"{p}.{unit}: {ours} exceeds the supervisor's {theirs}; a child's budget is "
                "carved from its parent's"
            )
    return out


def _budget_problems(budget: Any, p: str) -> list[str]:
    if not isinstance(budget, Budget):
        return [f"{p}: must be a Budget"]
    out = [
        f"{p}.{unit}: must be a non-negative integer or None, got {value!r}"
        for unit in ("steps", "tokens", "spawns")
        if (value := getattr(budget, unit)) is not None
        and (not isinstance(value, int) or isinstance(value, bool) or value < 0)
    ]
    if budget.cost is not None and not _is_amount(budget.cost):
        out.append(
            f"{p}.cost: must be dollars as a Decimal (Decimal('5.00')) or an integer of 0 "
            f"or more, or None; got {budget.cost!r}"
        )
    ttl = budget.ttl_s
    if ttl is not None and (
        not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0
    ):
        out.append(f"{p}.ttl_s: must be a number of seconds above 0, or None; got {ttl!r}")
    return out


def _is_amount(value: Any) -> bool:
    """A non-negative, finite Decimal or int (a float would round money)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return False
    return Decimal(value).is_finite() and value >= 0
