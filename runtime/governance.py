"""Gate stage 3, governance: is this agent's role allowed to do it, and at what risk?

The answer is ``allow`` (tier low), ``approval`` at a tier (medium or high, or past a
grant's threshold), or ``deny``, with the ids of the rules that decided and the reason.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel

from tether.agents.builtins import builtins_of
from tether.agents.tools import Tool
from tether.topologies.policy import NUMERIC, Policy, Rule, When, as_number
from tether.topologies.spec import TIER_RANK, Agent, Grant, Tier, default_tier

from ._provenance import Origin
from .boundaries import domain_of, lookup

Verdict = Literal["allow", "deny", "approval"]


@dataclass(frozen=True)
class Decision:
    """What governance decided for one action."""

    verdict: Verdict
    """allow, deny, or approval (a person decides)."""
    tier: Tier
    """The action's risk tier."""
    rules: tuple[str, ...]
    """Ids of the rules that decided."""
    reason: str
    """Why."""


Check = Callable[[dict[str, Any], dict[str, Origin]], bool]


def _compile(cond: When) -> Check:
    """A condition as a closure over (arguments, provenance): what a decision runs."""
    field, op, target = cond.field, cond.op, cond.value
    dotted = "." in field

    def value(args: dict[str, Any]) -> Any:
        return lookup(args, field) if dotted else args.get(field)

    if op in NUMERIC:
        limit = as_number(target)
        assert limit is not None  # validated with the policy
        compare = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[op]

        def numeric(args: dict[str, Any], _: dict[str, Origin]) -> bool:
            n = as_number(value(args))
            return n is not None and bool(compare(n, limit))

        return numeric
    if op in ("eq", "ne"):
        want = str(target).casefold()
        same = op == "eq"
        return lambda args, _: (str(value(args)).casefold() == want) is same
    if op in ("in", "not_in"):
        members = frozenset(str(v).casefold() for v in target)
        inside = op == "in"
        return lambda args, _: (str(value(args)).casefold() in members) is inside
    if op in ("domain_in", "domain_not_in"):
        domains = tuple(str(d).casefold().lstrip(".") for d in target)
        inside = op == "domain_in"

        def domain(args: dict[str, Any], _: dict[str, Origin]) -> bool:
            host = domain_of(value(args))
            hit = any(host == d or host.endswith("." + d) for d in domains)
            return hit is inside

        return domain
    if op in ("from", "not_from"):
        origins = frozenset(target)
        inside = op == "from"
        top = field.split(".")[0]

        def origin(_: dict[str, Any], provenance: dict[str, Origin]) -> bool:
            found = provenance.get(top)
            return (found is not None and found.kind in origins) is inside

        return origin
    pattern = re.compile(str(target))
    found = op == "matches"
    return lambda args, _: (pattern.search(str(value(args))) is not None) is found


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    checks: tuple[Check, ...]

    def matches(self, args: dict[str, Any], provenance: dict[str, Origin]) -> bool:
        return all(check(args, provenance) for check in self.checks)


class CompiledPolicy:
    """A policy's rules for one agent, indexed by tool: a decision runs only the rules
    that can apply to the tool called, each a few closures."""

    def __init__(self, policy: Policy, agent: str) -> None:
        self.rules = [
            _Compiled(r, tuple(_compile(c) for c in r.when))
            for r in policy.rules
            if any(fnmatch.fnmatchcase(agent, a) for a in r.agents)
        ]
        self._by_tool: dict[str, list[_Compiled]] = {}

    def for_tool(self, tool: str) -> list[_Compiled]:
        found = self._by_tool.get(tool)
        if found is None:
            found = self._by_tool[tool] = [
                c for c in self.rules if any(fnmatch.fnmatchcase(tool, t) for t in c.rule.tools)
            ]
        return found

    def matching(
        self, tool: str, args: dict[str, Any], provenance: dict[str, Origin]
    ) -> list[Rule]:
        return [c.rule for c in self.for_tool(tool) if c.matches(args, provenance)]


class Governance:
    """Role-based decisions for one agent."""

    def __init__(self, agent: Agent, policy: Policy | None = None) -> None:
        self.policy = CompiledPolicy(policy or Policy(), agent.name)
        self.role = agent.role.name
        self.grants: dict[str, Grant] = {g.tool: g for g in agent.role.grants}
        for b in builtins_of(agent):
            # Declaring what gives a built-in tool is its grant (naming handoff targets,
            # peers or workers, bounding memory, watching progress); rails check the rest.
            self.grants.setdefault(b.tool.name, Grant(b.tool.name, tier="low"))

    def decide(
        self, tool: Tool, args: BaseModel, provenance: dict[str, Origin] | None = None
    ) -> Decision:
        """The role's grant, then the policy's rules: deny wins, then approval (at the
        highest tier asked), then allow; a rule never widens what the grant allows."""
        base = self._by_grant(tool, args)
        if base.verdict == "deny" or not self.policy.rules:
            return base
        matched = self.policy.matching(tool.name, args.model_dump(), provenance or {})
        if not matched:
            return base
        denied = [r for r in matched if r.effect == "deny"]
        if denied:
            return Decision(
                "deny",
                base.tier,
                tuple(f"policy:{r.id}" for r in denied),
                "; ".join(r.reason or f"policy rule {r.id} denies it" for r in denied),
            )
        asked = [r for r in matched if r.effect == "approval"]
        if asked:
            tier = max(
                [*(r.tier for r in asked), *([base.tier] if base.verdict == "approval" else [])],
                key=TIER_RANK.__getitem__,
            )
            reasons = [r.reason or f"policy rule {r.id} asks a person" for r in asked]
            if base.verdict == "approval":
                reasons.insert(0, base.reason)
            return Decision(
                "approval",
                tier,  # type: ignore[arg-type]
                (*base.rules, *(f"policy:{r.id}" for r in asked)),
                "; ".join(reasons) + f" (tier {tier})",
            )
        allowed = tuple(f"policy:{r.id}" for r in matched)
        return Decision(base.verdict, base.tier, (*base.rules, *allowed), base.reason)

    def _by_grant(self, tool: Tool, args: BaseModel) -> Decision:
        grant = self.grants.get(tool.name)
        if grant is None:
            return Decision(
                "deny",
                default_tier(tool),
                (f"role:{self.role}",),
                f"role {self.role!r} is not granted tool {tool.name!r}",
            )
        rule = f"grant:{self.role}.{tool.name}"
        tier = grant.tier or default_tier(tool)
        threshold = grant.approval
        if threshold is not None:
            value = getattr(args, threshold.field, None)
            try:
                amount = Decimal(str(value))
            except (InvalidOperation, ValueError):
                amount = None
            if amount is None or amount > threshold.above:
                return Decision(
                    "approval",
                    threshold.tier,
                    (rule, f"{rule}.approval>{threshold.above}"),
                    f"{threshold.field} {value} is above {threshold.above}: "
                    f"a person must approve (tier {threshold.tier})",
                )
        if tier == "low":
            return Decision(
                "allow", tier, (rule,), f"role {self.role!r} is granted {tool.name!r} at tier low"
            )
        return Decision(
            "approval", tier, (rule,), f"{tool.name!r} is tier {tier}: a person must approve"
        )
