"""The policy benchmark: a 50-rule policy with provenance checks, decided by tether and by
Cedar (cedarpy) in the same run.

Both sides hold the same rules over ten tools, five per tool: a cap on the amount, the
payee's origin (provenance), the payee's domain, a forbidden phrase in the memo, and an
allow-list of known payees. Cedar has no "approval" effect, so the rules deny or allow,
and the role's grant is one more Cedar ``permit``. Both sides are parsed once; each Cedar
decision builds its request context from the call (the domain, the amount in cents, the
origin), as tether does inside its own decision. ``agree`` checks that the two decide
every sample call alike.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from tether.agents import ToolContext, tool
from tether.agents.scripted import ScriptedModel
from tether.runtime.boundaries import domain_of
from tether.runtime.governance import Governance
from tether.runtime.provenance import Origin
from tether.topologies import Agent, Grant, Policy, Role, Rule, When

TOOLS = [f"pay{i}" for i in range(10)]
KNOWN = ("acme@example.com", "billing@example.org", "ops@example.com")


class Payment(BaseModel):
    to: str
    amount: Decimal
    memo: str = ""


def _make(name: str) -> Any:
    def fn(args: Payment, ctx: ToolContext) -> dict[str, Any]:
        return {}

    fn.__doc__ = f"Pay ({name})."
    return tool(name=name)(fn)


def tether_policy() -> Policy:
    rules = []
    for i, name in enumerate(TOOLS):
        limit = 1000 * (i + 1)
        rules += [
            Rule(f"{name}-cap", "deny", (name,), when=(When("amount", "gt", str(limit)),)),
            Rule(
                f"{name}-payee-origin",
                "deny",
                (name,),
                when=(When("to", "from", ("untrusted", "model")),),
            ),
            Rule(
                f"{name}-domain",
                "deny",
                (name,),
                when=(When("to", "domain_not_in", ("example.com", "example.org")),),
            ),
            Rule(f"{name}-memo", "deny", (name,), when=(When("memo", "matches", "urgent wire"),)),
            Rule(f"{name}-known", "allow", (name,), when=(When("to", "in", KNOWN),)),
        ]
    return Policy(tuple(rules))


def cedar_policies() -> str:
    grants = ", ".join(f'Action::"{name}"' for name in TOOLS)
    out = [f'permit(principal == Agent::"clerk", action in [{grants}], resource);']
    known = ", ".join(f'"{k}"' for k in KNOWN)
    domain = (
        '!["example.com", "example.org"].contains(context.to_domain) && '
        '!(context.to_domain like "*.example.com") && !(context.to_domain like "*.example.org")'
    )
    for i, name in enumerate(TOOLS):
        act = f'action == Action::"{name}"'
        forbid = [
            f"context.amount_cents > {100_000 * (i + 1)}",
            '["untrusted", "model"].contains(context.to_origin)',
            domain,
            'context.memo like "*urgent wire*"',
        ]
        out += [f"forbid(principal, {act}, resource) when {{ {c} }};" for c in forbid]
        out.append(f"permit(principal, {act}, resource) when {{ [{known}].contains(context.to) }};")
    return "\n".join(out)


SAMPLES: list[tuple[str, dict[str, Any], str]] = [
    ("pay0", {"to": "acme@example.com", "amount": "250", "memo": "invoice 17"}, "system"),
    ("pay0", {"to": "acme@example.com", "amount": "2500", "memo": "invoice 18"}, "system"),
    ("pay3", {"to": "acme@example.com", "amount": "2500", "memo": "invoice 18"}, "system"),
    ("pay1", {"to": "mallory@evil.test", "amount": "10", "memo": ""}, "system"),
    ("pay1", {"to": "acme@example.com", "amount": "10", "memo": ""}, "untrusted"),
    ("pay2", {"to": "x@sub.example.org", "amount": "10", "memo": "please urgent wire"}, "system"),
    ("pay9", {"to": "x@sub.example.org", "amount": "10", "memo": "invoice"}, "operator"),
    ("pay5", {"to": "ops@example.com", "amount": "5999.99", "memo": "batch"}, "model"),
]


class Decider:
    """One side's decision for (tool, arguments, payee origin)."""

    def __init__(self) -> None:
        import cedarpy

        tools = tuple(_make(n) for n in TOOLS)
        self.tools = {t.name: t for t in tools}
        agent = Agent(
            "clerk",
            Role("clerk", grants=tuple(Grant(n, tier="low") for n in TOOLS)),
            ScriptedModel([]),
            tools=tools,
        )
        self.governance = Governance(agent, tether_policy())
        self.cedarpy = cedarpy
        self.policies = cedarpy.PolicySet.from_str(cedar_policies())
        self.entities = cedarpy.Entities.from_json_str("[]")

    def tether(self, name: str, args: Payment, origin: str) -> bool:
        provenance = {"to": Origin(origin, "bench")}
        return self.governance.decide(self.tools[name], args, provenance).verdict == "allow"

    def cedar(self, name: str, args: Payment, origin: str) -> bool:
        request = {
            "principal": {"type": "Agent", "id": "clerk"},
            "action": {"type": "Action", "id": name},
            "resource": {"type": "Tool", "id": name},
            "context": {
                "to": args.to,
                "to_domain": domain_of(args.to),
                "to_origin": origin,
                "amount_cents": int(args.amount * 100),
                "memo": args.memo,
            },
        }
        return bool(self.cedarpy.is_authorized(request, self.policies, self.entities).allowed)


def agree(decider: Decider) -> list[tuple[str, bool, bool]]:
    """Every sample as (tool, tether allows, cedar allows)."""
    out = []
    for name, raw, origin in SAMPLES:
        args = Payment.model_validate(raw)
        out.append((name, decider.tether(name, args, origin), decider.cedar(name, args, origin)))
    return out


def measure(n: int = 5_000) -> dict[str, float]:
    """Median µs of one decision on each side, call by call alternated."""
    decider = Decider()
    mismatched = [s for s in agree(decider) if s[1] != s[2]]
    if mismatched:
        raise AssertionError(f"tether and Cedar decide differently: {mismatched}")
    args = Payment(to="acme@example.com", amount=Decimal("250"), memo="invoice 17")
    ours, theirs = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        decider.tether("pay7", args, "system")
        t1 = time.perf_counter()
        decider.cedar("pay7", args, "system")
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    tether_us = statistics.median(ours) * 1e6
    cedar_us = statistics.median(theirs) * 1e6
    return {
        "policy_decision_us": round(tether_us, 2),
        "policy_vs_cedarpy": round(tether_us / cedar_us, 3),
        "cedarpy_decision_us": round(cedar_us, 2),
    }
