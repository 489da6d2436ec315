"""Gate stage 3, governance: is this agent's role allowed to do it, and at what risk?

The answer is ``allow`` (tier low), ``approval`` at a tier (medium or high, or past a
grant's threshold), or ``deny``, with the ids of the rules that decided and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import BaseModel

from tether.agents.tools import HANDOFF, PAGE_BACK, Tool
from tether.topologies.spec import Agent, Grant, Tier

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


def default_tier(tool: Tool) -> Tier:
    """Tier from the tool's annotations: read-only → low, destructive → high, else medium."""
    if tool.read_only:
        return "low"
    return "high" if tool.destructive else "medium"


class Governance:
    """Role-based decisions for one agent."""

    def __init__(self, agent: Agent) -> None:
        self.role = agent.role.name
        self.grants: dict[str, Grant] = {g.tool: g for g in agent.role.grants}
        if agent.handoffs:
            # Naming handoff targets in the topology is the grant; the rail checks the target.
            self.grants.setdefault(HANDOFF, Grant(HANDOFF, tier="low"))
        if agent.context_tokens is not None:
            # Reading its own compacted memory back is part of having a bounded one.
            self.grants.setdefault(PAGE_BACK, Grant(PAGE_BACK, tier="low"))

    def decide(self, tool: Tool, args: BaseModel) -> Decision:
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
