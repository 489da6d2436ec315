"""The policy benchmark: a 50-rule policy with provenance checks, decided by tether and by
Cedar (cedarpy) in the same run, each side given the same work.

Both sides hold the same rules over ten tools, five per tool: a cap on the amount, the
payee's origin (provenance), the payee's domain, a forbidden phrase in the memo, and an
allow-list of known payees. Cedar has no "approval" effect, so the rules deny or allow,
and the role's grant is one more Cedar ``permit``. What makes the work equal:

- The same parsed inputs: each decision starts from the same ``Payment`` (validated once,
  outside the timed region), the tool's name and the payee's origin, and ends in a yes or
  no. Both policies are parsed once, outside it.
- The same number of rules evaluated: tether indexes its rules by tool, so a call runs
  the grant and the tool's five rules. Cedar is given the same index, built once: a
  policy set per tool holding the grant's ``permit`` and that tool's five policies (its
  authorizer would otherwise evaluate all 51). ``agree`` checks that tether and Cedar
  decide every sample alike, ``sliced_as_whole`` that each slice decides as the whole set.
- The marshalling in both timed regions: tether turns the arguments into a dict and the
  origin into provenance inside its decision; Cedar's request is built from the same
  inputs (the domain, the amount in cents, the origin) and handed to cedarpy, which
  encodes it as JSON for the engine and decodes the answer.
- The same calls: every sample (allowed and denied ones), in turn, alternating which side
  goes first.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from tether.agents import ToolContext, tool
from tether.agents.scripted import ScriptedModel
from tether.runtime._provenance import Origin
from tether.runtime.boundaries import domain_of
from tether.runtime.governance import Governance
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


def cedar_policies(only: str | None = None) -> str:
    """The Cedar policy set: the grant and every tool's five policies, or the grant and
    only tool ``only``'s five (the slice a call to it can match)."""
    grants = ", ".join(f'Action::"{name}"' for name in TOOLS)
    out = [f'permit(principal == Agent::"clerk", action in [{grants}], resource);']
    known = ", ".join(f'"{k}"' for k in KNOWN)
    domain = (
        '!["example.com", "example.org"].contains(context.to_domain) && '
        '!(context.to_domain like "*.example.com") && !(context.to_domain like "*.example.org")'
    )
    for i, name in enumerate(TOOLS):
        if only is not None and name != only:
            continue
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
        self.everything = cedarpy.PolicySet.from_str(cedar_policies())
        self.by_tool = {n: cedarpy.PolicySet.from_str(cedar_policies(n)) for n in TOOLS}
        self.entities = cedarpy.Entities.from_json_str("[]")

    def tether(self, name: str, args: Payment, origin: str) -> bool:
        provenance = {"to": Origin(origin, "bench")}
        return self.governance.decide(self.tools[name], args, provenance).verdict == "allow"

    def cedar(self, name: str, args: Payment, origin: str, everything: bool = False) -> bool:
        """Cedar's decision over the tool's slice of the policies (with ``everything``,
        over all 51)."""
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
        policies = self.everything if everything else self.by_tool[name]
        return bool(self.cedarpy.is_authorized(request, policies, self.entities).allowed)


def agree(decider: Decider) -> list[tuple[str, bool, bool]]:
    """Every sample as (tool, tether allows, Cedar allows: the tool's slice)."""
    out = []
    for name, raw, origin in SAMPLES:
        args = Payment.model_validate(raw)
        out.append((name, decider.tether(name, args, origin), decider.cedar(name, args, origin)))
    return out


def sliced_as_whole(decider: Decider) -> list[tuple[str, bool, bool]]:
    """Every sample as (tool, Cedar's slice for the tool allows, all of Cedar allows):
    the slice is faithful when the two agree."""
    out = []
    for name, raw, origin in SAMPLES:
        args = Payment.model_validate(raw)
        whole = decider.cedar(name, args, origin, everything=True)
        out.append((name, decider.cedar(name, args, origin), whole))
    return out


def measure(n: int = 5_000) -> dict[str, float]:
    """Median µs of one decision on each side over the samples in turn, the two sides
    alternated call by call (and which goes first, round by round)."""
    decider = Decider()
    decided = agree(decider)
    mismatched = [s for s in decided if s[1] != s[2]]
    if mismatched:
        raise AssertionError(f"tether and Cedar decide differently: {mismatched}")
    unfaithful = [s for s in sliced_as_whole(decider) if s[1] != s[2]]
    if unfaithful:
        raise AssertionError(f"Cedar's slices decide unlike the whole set: {unfaithful}")
    assert {s[1] for s in decided} == {True, False}  # the samples take both paths
    calls = [(name, Payment.model_validate(raw), origin) for name, raw, origin in SAMPLES]
    ours: list[float] = []
    theirs: list[float] = []
    whole: list[float] = []
    sides = [
        (lambda c: decider.tether(*c), ours),
        (lambda c: decider.cedar(*c), theirs),
    ]
    for i in range(n):
        call = calls[i % len(calls)]
        for decide, samples in sides if i % 2 else sides[::-1]:
            t0 = time.perf_counter()
            decide(call)
            samples.append(time.perf_counter() - t0)
        if i % 10 == 0:  # Cedar over all 51 policies, for scale: what the slice saves it
            t0 = time.perf_counter()
            decider.cedar(*call, everything=True)
            whole.append(time.perf_counter() - t0)
    tether_us = statistics.median(ours) * 1e6
    cedar_us = statistics.median(theirs) * 1e6
    return {
        "policy_decision_us": round(tether_us, 2),
        "policy_vs_cedarpy": round(tether_us / cedar_us, 3),
        "cedarpy_decision_us": round(cedar_us, 2),
        "cedarpy_all_policies_decision_us": round(statistics.median(whole) * 1e6, 2),
    }
