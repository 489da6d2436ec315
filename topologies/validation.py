"""Validation of a topology: every problem at once, each with its path and the fix."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tether.agents.builtins import BUILTINS
from tether.agents.model import Model, Price
from tether.agents.tools import Tool

from ._shapecheck import type_problems
from .policy import ORIGINS, Policy
from .rails import (
    RAILS,
    AllowedDomains,
    AllowedPaths,
    AllowedValues,
    Forbidden,
    Provenance,
    RateLimit,
    ReadOnly,
    SpendCap,
)
from .spec import (
    RESTART_TYPES,
    STRATEGIES,
    TIER_RANK,
    TIERS,
    Agent,
    Budget,
    Grant,
    Restarts,
    Retries,
    Role,
    Stuck,
    Supervisor,
    default_tier,
)
from .stage import stage_problems

if TYPE_CHECKING:
    from .topology import Topology


def problems_of(topology: Topology) -> list[str]:
    """Every problem with a topology, each with its path; empty when it is valid."""
    name = topology.name if isinstance(topology.name, str) and topology.name else "topology"
    try:
        return _problems_of(topology)
    except Exception as e:  # a field of a kind validation did not expect: say which
        return _by_type(e, topology, type(topology), name)


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
    out += stage_problems(topology.stages, f"{name}.stages")
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
