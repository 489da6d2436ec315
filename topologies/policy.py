"""Policies: rules that decide, on top of the roles' grants, what an action needs.

A rule matches actions by tool and agent (``*`` and globs allowed) and by conditions on
their arguments — their values and where they came from — and has one effect: ``deny``,
``approval`` at a tier, or ``allow``. Deny wins over approval, approval over allow, and a
rule never widens a grant: what a role is not granted stays denied, and an approval a grant
demands stays demanded. Every decision names the ids of the rules that made it.

Written in Python (``Policy(rules=(Rule(...), ...))``) or loaded from a file an operator
owns, TOML or YAML (``Policy.load("policy.toml")``)::

    [[rule]]
    id = "refunds-over-1000"
    effect = "deny"
    tools = ["issue_refund"]
    when = [{ field = "amount", op = "gt", value = "1000" }]
    reason = "refunds above 1000 go through finance"

Operators: ``eq ne in not_in gt ge lt le`` (numbers compare as numbers), ``matches`` and
``not_matches`` (a regular expression, searched), ``domain_in`` and ``domain_not_in``
(the domain of an email address or the host of a URL, or a subdomain of one), ``from`` and
``not_from`` (the argument's origin: operator, system, agent, untrusted, model).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.memory.errors import PolicyError

Effect = Literal["allow", "deny", "approval"]
EFFECTS = ("allow", "deny", "approval")
TIERS = ("low", "medium", "high")
ORIGINS = ("operator", "system", "agent", "untrusted", "model")
"""Where an argument can come from, most trusted first (``runtime/_provenance.py``)."""
NUMERIC = ("gt", "ge", "lt", "le")
LISTS = ("in", "not_in", "domain_in", "domain_not_in", "from", "not_from")
OPERATORS = ("eq", "ne", *NUMERIC, "matches", "not_matches", *LISTS)


@dataclass(frozen=True)
class When:
    """One condition on an argument."""

    field: str
    """The argument (``amount``; a dotted path reaches into an object)."""
    op: str
    """One of ``OPERATORS``."""
    value: Any
    """What it is compared with: a value, a list (``in``, ``domain_in``, ``from``), a
    regular expression (``matches``)."""


@dataclass(frozen=True)
class Rule:
    """One policy rule."""

    id: str
    """Its id, recorded with every decision it takes part in."""
    effect: Effect
    """deny, approval (a person decides, at ``tier``), or allow."""
    tools: tuple[str, ...] = ("*",)
    """The tools it applies to (globs)."""
    agents: tuple[str, ...] = ("*",)
    """The agents it applies to (globs)."""
    when: tuple[When, ...] = ()
    """Conditions that must all hold; none = every call of those tools."""
    tier: str = "high"
    """The tier an ``approval`` asks at."""
    reason: str = ""
    """Why, in words a person reads."""


@dataclass(frozen=True)
class Policy:
    """Rules, in the order they were written."""

    rules: tuple[Rule, ...] = ()

    def problems(self, path: str = "policy") -> list[str]:
        """Every problem, each with its path; empty when the policy is valid."""
        out: list[str] = []
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            p = f"{path}.rules[{i}]"
            if not isinstance(rule, Rule):
                out.append(f"{p}: must be a Rule")
                continue
            if not isinstance(rule.id, str) or not rule.id.strip():
                out.append(f"{p}.id: give the rule an id, e.g. 'refunds-over-1000'")
            elif rule.id in seen:
                out.append(f"{p}.id: {rule.id!r} is used by another rule; ids must be unique")
            seen.add(rule.id)
            if rule.effect not in EFFECTS:
                out.append(
                    f"{p}.effect: {rule.effect!r} is not an effect; use allow, deny or approval"
                )
            if rule.tier not in TIERS:
                out.append(f"{p}.tier: {rule.tier!r} is not a tier; use low, medium or high")
            for name in ("tools", "agents"):
                value = getattr(rule, name)
                if (
                    not isinstance(value, tuple)
                    or not value
                    or not all(isinstance(v, str) and v for v in value)
                ):
                    out.append(f"{p}.{name}: give a list of names or globs, e.g. ['*']")
            for j, cond in enumerate(rule.when):
                out += _condition_problems(cond, f"{p}.when[{j}]")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """A policy from a TOML or YAML file; ``PolicyError`` lists every problem."""
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as e:
            raise PolicyError(str(file), [f"cannot read it: {e.strerror or e}"]) from e
        if file.suffix not in (".toml", ".yaml", ".yml"):
            raise PolicyError(str(file), ["name it .toml, .yaml or .yml"])
        try:
            data = tomllib.loads(text) if file.suffix == ".toml" else yaml.safe_load(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
            kind = "TOML" if file.suffix == ".toml" else "YAML"
            raise PolicyError(str(file), [f"not valid {kind}: {' '.join(str(e).split())}"]) from e
        policy, problems = from_data(data)
        problems += policy.problems("policy") if not problems else []
        if problems:
            raise PolicyError(str(file), problems)
        return policy


_RULE_KEYS = {"id", "effect", "tools", "agents", "when", "tier", "reason"}


def from_data(data: Any) -> tuple[Policy, list[str]]:
    """A policy from parsed TOML/YAML (``{"rule": [...]}``), and the problems found."""
    if not isinstance(data, dict):
        return Policy(), ["the file must hold a table with a `rule` list"]
    unknown = sorted(set(data) - {"rule", "version"})
    problems = [f"{k}: unknown key; the file holds `rule` entries" for k in unknown]
    raw = data.get("rule", [])
    if not isinstance(raw, list):
        return Policy(), [*problems, "rule: must be a list of rules ([[rule]] in TOML)"]
    rules = []
    for i, r in enumerate(raw):
        p = f"policy.rules[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{p}: must be a table of id, effect, tools, when, ...")
            continue
        for k in sorted(set(r) - _RULE_KEYS):
            problems.append(f"{p}.{k}: unknown key; use {sorted(_RULE_KEYS)}")
        conditions = []
        for j, c in enumerate(r.get("when", []) or []):
            if not isinstance(c, dict) or set(c) != {"field", "op", "value"}:
                problems.append(f"{p}.when[{j}]: must be {{field, op, value}}")
                continue
            value = tuple(c["value"]) if isinstance(c["value"], list) else c["value"]
            conditions.append(When(str(c["field"]), str(c["op"]), value))
        rules.append(
            Rule(
                id=r.get("id", ""),
                effect=r.get("effect", ""),
                tools=_names(r.get("tools", ["*"])),
                agents=_names(r.get("agents", ["*"])),
                when=tuple(conditions),
                tier=r.get("tier", "high"),
                reason=str(r.get("reason", "")),
            )
        )
    return Policy(tuple(rules)), problems


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _condition_problems(cond: Any, p: str) -> list[str]:
    if not isinstance(cond, When):
        return [f"{p}: must be a When"]
    if not isinstance(cond.field, str) or not cond.field:
        return [f"{p}.field: name the argument"]
    if cond.op not in OPERATORS:
        return [f"{p}.op: {cond.op!r} is not an operator; use one of {', '.join(OPERATORS)}"]
    if cond.op in NUMERIC and as_number(cond.value) is None:
        return [f"{p}.value: {cond.op} compares numbers; {cond.value!r} is not one"]
    if cond.op in LISTS and not isinstance(cond.value, tuple | list):
        return [f"{p}.value: {cond.op} takes a list, e.g. ['a', 'b']"]
    if cond.op in ("from", "not_from"):
        wrong = [v for v in cond.value if v not in ORIGINS]
        if wrong:
            return [f"{p}.value: {wrong} are not origins; use {', '.join(ORIGINS)}"]
    if cond.op in ("matches", "not_matches"):
        try:
            re.compile(str(cond.value))
        except re.error as e:
            return [f"{p}.value: not a regular expression ({e})"]
    return []


def as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
