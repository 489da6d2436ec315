"""Gate stage 1, boundaries: is this action even possible?

The tool's pydantic schema validates the arguments; deterministic rails (allowlists,
spend caps, handoff targets) refuse what can never be allowed. Code, never a prompt.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from tether.agents.builtins import builtins_of
from tether.agents.secrets import handles
from tether.agents.tools import Tool
from tether.topologies.rails import (
    AllowedDomains,
    AllowedPaths,
    AllowedValues,
    Forbidden,
    Provenance,
    Rail,
    RateLimit,
    ReadOnly,
    SpendCap,
)
from tether.topologies.spec import Agent

from ._provenance import MADE_UP, Origin, Sources


@dataclass(frozen=True)
class Violation:
    """One rule an action broke."""

    rule: str
    """The rule's id (``schema``, ``allow:send_email.to``, ``cap:issue_refund.amount``)."""
    field: str
    """The argument concerned."""
    message: str
    """What is wrong, and what would be allowed."""

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class BoundaryCheck:
    """The result of stage 1: validated arguments, or the violations."""

    tool: Tool | None
    args: BaseModel | None
    violations: tuple[Violation, ...]
    provenance: dict[str, Origin] = field(default_factory=dict)
    """Where each argument came from."""

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def reason(self) -> str:
        if self.passed:
            return "arguments match the schema and every rail"
        return "; ".join(f"{v.message} (rule {v.rule})" for v in self.violations)


def lookup(context: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of the trusted context, or None."""
    value: Any = context
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _provenance(rail: Provenance, value: Any, origin: Origin) -> list[Violation]:
    wanted = " or ".join(rail.origins) + (f" ({rail.source})" if rail.source else "")
    if origin.kind in rail.origins and (
        rail.source is None
        or origin.source == rail.source
        or origin.source.startswith((rail.source + ".", rail.source + "[", rail.source + "#"))
    ):
        return []
    came = (
        "was made up by the model (it appears in nothing the agent was shown)"
        if origin.kind == "model"
        else f"came from {origin.kind} content ({origin.source})"
    )
    return [
        Violation(
            rail.rule_id,
            rail.field,
            f"{rail.field} {repr(value) if isinstance(value, str) else value} {came}; "
            f"it must come from {wanted}",
        )
    ]


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


class Boundaries:
    """Stage 1 for one agent: schema plus rails, with per-episode spend kept here."""

    def __init__(
        self,
        agent: Agent,
        context: dict[str, Any],
        fleet: dict[tuple[str, str], Decimal] | None = None,
    ) -> None:
        self.tools = agent.all_tools()
        self.rails: dict[str, list[Rail]] = {}
        self.read_only = [r for r in agent.rails if isinstance(r, ReadOnly)]
        for rail in agent.rails:
            if not isinstance(rail, ReadOnly):
                self.rails.setdefault(rail.tool, []).append(rail)
        self.fleet = fleet if fleet is not None else {}
        """What every agent of the episode spent, per (tool, argument): shared."""
        self.windows: dict[str, timedelta] = {}
        """The longest rate-limit window of each rate-limited tool."""
        for r in agent.rails:
            if isinstance(r, RateLimit):
                window = timedelta(seconds=r.per_s)
                self.windows[r.tool] = max(self.windows.get(r.tool, window), window)
        self.calls: dict[str, list[datetime]] = {}
        """When each rate-limited tool's calls ran, within its longest window."""
        self.patterns = {
            r: [re.compile(p) for p in r.patterns] for r in agent.rails if isinstance(r, Forbidden)
        }
        for b in builtins_of(agent):
            if b.to_named:  # naming the agents is the grant; this rail holds it to them
                values = getattr(agent, b.given_by)
                self.rails.setdefault(b.tool.name, []).append(
                    AllowedValues(tool=b.tool.name, field="to", values=values)
                )
        # Allowed sets are resolved once, from trusted records, never from model text.
        self.allowed: dict[AllowedValues, frozenset[str]] = {}
        for rails in self.rails.values():
            for rail in rails:
                if isinstance(rail, AllowedValues):
                    extra = lookup(context, rail.from_context) if rail.from_context else None
                    values = {*rail.values, *([str(extra)] if extra is not None else [])}
                    self.allowed[rail] = frozenset(v.casefold() for v in values)
        self.spent: dict[SpendCap, Decimal] = {}
        self.secrets = {g.tool: frozenset(g.secrets) for g in agent.role.grants}
        """The secrets each tool may receive, by its grant."""

    def check(
        self,
        tool_name: str,
        arguments: dict[str, Any],
        sources: Sources | None = None,
        now: datetime | None = None,
    ) -> BoundaryCheck:
        """Validate and check one call; never raises for bad input from a model.
        ``sources``: what the agent was shown, to trace each argument's origin; ``now``:
        when the call was proposed, for rate limits."""
        found = self.tools.get(tool_name)
        if found is None:
            return BoundaryCheck(
                None,
                None,
                (
                    Violation(
                        "tool", "name", f"unknown tool {tool_name!r}; known: {sorted(self.tools)}"
                    ),
                ),
            )
        if not isinstance(arguments, dict):
            shown = str(arguments)[:80]
            return BoundaryCheck(
                found,
                None,
                (
                    Violation(
                        "schema",
                        "arguments",
                        f"arguments must be a JSON object; got {shown!r}: call {tool_name} "
                        "again with its arguments as a JSON object",
                    ),
                ),
            )
        try:
            args = found.args.model_validate(arguments)
        except ValidationError as e:
            return BoundaryCheck(
                found,
                None,
                tuple(
                    Violation(
                        "schema",
                        ".".join(str(p) for p in err["loc"]) or "arguments",
                        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}",
                    )
                    for err in e.errors()
                ),
            )
        provenance = (
            {name: sources.origin_of(getattr(args, name)) for name in type(args).model_fields}
            if sources is not None
            else {}
        )
        violations = [
            v
            for rail in self.rails.get(tool_name, [])
            for v in self._rail(rail, args, provenance, now)
        ]
        if not found.read_only:
            violations += [
                Violation(
                    r.rule_id,
                    "tool",
                    f"the agent is read-only for {r.tool!r}, and {tool_name} changes things",
                )
                for r in self.read_only
                if fnmatch.fnmatchcase(tool_name, r.tool)
            ]
        granted = self.secrets.get(tool_name, frozenset())
        violations += [
            Violation(
                f"secret:{tool_name}",
                "arguments",
                f"secret://{name} is not granted to {tool_name}; grant it with "
                f"Grant({tool_name!r}, secrets=({name!r},))",
            )
            for name in sorted(handles(args) - granted)
        ]
        return BoundaryCheck(found, args, tuple(violations), provenance)

    def _rail(
        self,
        rail: Rail,
        args: BaseModel,
        provenance: dict[str, Origin],
        now: datetime | None,
    ) -> list[Violation]:
        if isinstance(rail, RateLimit):
            return self._rate(rail, now)
        if isinstance(rail, ReadOnly):
            return []
        value = getattr(args, rail.field, None)
        if isinstance(rail, Provenance):
            return _provenance(rail, value, provenance.get(rail.field, MADE_UP))
        if isinstance(rail, AllowedDomains):
            host = domain_of(value)
            if any(host == d.casefold() or host.endswith("." + d.casefold()) for d in rail.domains):
                return []
            return [
                Violation(
                    rail.rule_id,
                    rail.field,
                    f"{rail.field} {value!r} is outside the allowed domains {list(rail.domains)}",
                )
            ]
        if isinstance(rail, AllowedPaths):
            return _paths(rail, value)
        if isinstance(rail, Forbidden):
            text = str(value)
            if text.casefold() in {v.casefold() for v in rail.values} or any(
                p.search(text) for p in self.patterns[rail]
            ):
                return [Violation(rail.rule_id, rail.field, f"{rail.field} {value!r} is forbidden")]
            return []
        if isinstance(rail, AllowedValues):
            allowed = self.allowed[rail]
            if value is None or str(value).casefold() not in allowed:
                return [
                    Violation(
                        rail.rule_id,
                        rail.field,
                        f"{rail.field} {value!r} is not allowed; allowed: {sorted(allowed)}",
                    )
                ]
            return []
        amount = _number(value)
        if amount is None:
            return [Violation(rail.rule_id, rail.field, f"{rail.field} {value!r} is not a number")]
        out = []
        if rail.per_call is not None and amount > rail.per_call:
            out.append(
                Violation(
                    rail.rule_id,
                    rail.field,
                    f"{rail.field} {amount} exceeds the per-call cap {rail.per_call}",
                )
            )
        shared = self.fleet.get((rail.tool, rail.field), Decimal(0))
        if rail.per_fleet is not None and shared + amount > rail.per_fleet:
            out.append(
                Violation(
                    rail.rule_id,
                    rail.field,
                    f"{rail.field} {amount} would bring the fleet's total to {shared + amount}, "
                    f"over the cap {rail.per_fleet} every agent shares",
                )
            )
        spent = self.spent.get(rail, Decimal(0))
        if rail.per_episode is not None and spent + amount > rail.per_episode:
            out.append(
                Violation(
                    rail.rule_id,
                    rail.field,
                    f"{rail.field} {amount} would bring the episode's total to "
                    f"{spent + amount}, over the cap {rail.per_episode}",
                )
            )
        return out

    def _rate(self, rail: RateLimit, now: datetime | None) -> list[Violation]:
        if now is None:
            return []
        times = self.calls.get(rail.tool, [])
        # Forget calls older than the tool's longest window: they can never count again.
        oldest = now - self.windows[rail.tool]
        while times and times[0] <= oldest:
            times.pop(0)
        since = now - timedelta(seconds=rail.per_s)
        recent = [t for t in times if t > since]
        if len(recent) < rail.calls:
            return []
        return [
            Violation(
                rail.rule_id,
                "tool",
                f"{rail.tool} ran {len(recent)} times in the last {rail.per_s:g} s; "
                f"the limit is {rail.calls}",
            )
        ]

    def note_executed(
        self, tool_name: str, arguments: dict[str, Any], at: datetime | None = None
    ) -> None:
        """Count an executed call toward the caps and rate limits (folded from the
        stream)."""
        if at is not None and tool_name in self.windows:
            self.calls.setdefault(tool_name, []).append(at)
        rails = self.rails.get(tool_name, [])
        for rail in rails:
            if isinstance(rail, SpendCap):
                amount = _number(arguments.get(rail.field))
                if amount is not None:
                    self.spent[rail] = self.spent.get(rail, Decimal(0)) + amount
        for key, amount in fleet_spend(rails, arguments).items():
            self.fleet[key] = self.fleet.get(key, Decimal(0)) + amount


def fleet_spend(rails: Iterable[Any], arguments: dict[str, Any]) -> dict[tuple[str, str], Decimal]:
    """What one executed call adds to the fleet's spend, per (tool, argument) that one of
    the calling agent's spend caps names: once per call, however many caps name it."""
    out: dict[tuple[str, str], Decimal] = {}
    for rail in rails:
        if isinstance(rail, SpendCap) and (rail.tool, rail.field) not in out:
            amount = _number(arguments.get(rail.field))
            if amount is not None:
                out[(rail.tool, rail.field)] = amount
    return out


def domain_of(value: Any) -> str:
    """The domain of an email address, or the host of a URL, lowercased."""
    text = str(value).strip().casefold()
    if "@" in text and "://" not in text:
        return text.rsplit("@", 1)[1]
    return (urlsplit(text if "://" in text else f"//{text}").hostname or "").casefold()


def _paths(rail: AllowedPaths, value: Any) -> list[Violation]:
    try:
        path = os.path.realpath(str(value))
        inside = any(
            os.path.commonpath([path, root]) == root
            for root in (os.path.realpath(r) for r in rail.roots)
        )
    except (ValueError, OSError):
        inside = False
    if inside:
        return []
    return [
        Violation(
            rail.rule_id,
            rail.field,
            f"{rail.field} {value!r} is outside the allowed directories {list(rail.roots)}",
        )
    ]
