"""Policies: rules on top of the grants, written in Python or loaded from TOML or YAML,
deciding deny, approval at a tier, or allow, with the ids of the rules that decided."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.agents import call, say
from tether.memory import Store
from tether.memory.errors import PolicyError, TopologyError
from tether.runtime._provenance import Origin
from tether.runtime.cli import app
from tether.runtime.governance import Governance
from tether.topologies import Grant, Policy, Rule, Topology, When

from .test_gate import Pay, Run, fleet, pay

TOML = """
version = 1

[[rule]]
id = "pay-over-1000"
effect = "deny"
tools = ["pay"]
when = [{ field = "amount", op = "gt", value = "1000" }]
reason = "payments above 1000 go through finance"

[[rule]]
id = "pay-outside"
effect = "approval"
tier = "medium"
tools = ["pa*"]
when = [{ field = "to", op = "domain_not_in", value = ["example.com"] }]

[[rule]]
id = "pay-from-text"
effect = "deny"
tools = ["pay"]
when = [{ field = "to", op = "from", value = ["untrusted", "model"] }]
reason = "a payee must come from our records"

[[rule]]
id = "pay-known"
effect = "allow"
tools = ["pay"]
when = [{ field = "to", op = "matches", value = "@example\\\\.com$" }]
"""

YAML = """
version: 1
rule:
  - id: pay-over-1000
    effect: deny
    tools: [pay]
    when: [{field: amount, op: gt, value: "1000"}]
    reason: payments above 1000 go through finance
  - id: pay-outside
    effect: approval
    tier: medium
    tools: ["pa*"]
    when: [{field: to, op: domain_not_in, value: [example.com]}]
  - id: pay-from-text
    effect: deny
    tools: [pay]
    when: [{field: to, op: from, value: [untrusted, model]}]
    reason: a payee must come from our records
  - id: pay-known
    effect: allow
    tools: [pay]
    when: [{field: to, op: matches, value: "@example\\\\.com$"}]
"""


def test_toml_and_yaml_load_the_same_policy(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(TOML)
    (tmp_path / "p.yaml").write_text(YAML)
    assert Policy.load(tmp_path / "p.toml") == Policy.load(tmp_path / "p.yaml")
    assert Policy.load(tmp_path / "p.toml").rules[0].id == "pay-over-1000"


def test_a_bad_policy_file_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        """
[[rule]]
id = "a"
effect = "block"
when = [{ field = "amount", op = "greater", value = "1" }]

[[rule]]
id = "a"
effect = "approval"
tier = "urgent"
when = [{ field = "to", op = "from", value = ["trusted"] },
        { field = "amount", op = "gt", value = "lots" }]
"""
    )
    with pytest.raises(PolicyError) as caught:
        Policy.load(tmp_path / "bad.toml")
    assert caught.value.problems == (
        "policy.rules[0].effect: 'block' is not an effect; use allow, deny or approval",
        "policy.rules[0].when[0].op: 'greater' is not an operator; use one of eq, ne, gt, ge, "
        "lt, le, matches, not_matches, in, not_in, domain_in, domain_not_in, from, not_from",
        "policy.rules[1].id: 'a' is used by another rule; ids must be unique",
        "policy.rules[1].tier: 'urgent' is not a tier; use low, medium or high",
        "policy.rules[1].when[0].value: ['trusted'] are not origins; use operator, system, "
        "agent, untrusted, model",
        "policy.rules[1].when[1].value: gt compares numbers; 'lots' is not one",
    )
    result = CliRunner().invoke(app, ["policy", "check", str(tmp_path / "bad.toml")])
    assert result.exit_code == 1 and "policy has 6 problems" in result.output
    (tmp_path / "ok.yaml").write_text(YAML)
    result = CliRunner().invoke(app, ["policy", "check", str(tmp_path / "ok.yaml")])
    assert result.exit_code == 0
    assert "4 rules (allow, approval, deny), valid" in result.output
    (tmp_path / "broken.yaml").write_text("rule: [ {id: x")
    with pytest.raises(PolicyError, match="not valid YAML"):
        Policy.load(tmp_path / "broken.yaml")


def governance(tmp_path: Path) -> Governance:
    (tmp_path / "p.toml").write_text(TOML)
    topology = fleet([say("-")], grants=(Grant("pay", tier="low"),))
    return Governance(topology.agents()["clerk"], Policy.load(tmp_path / "p.toml"))


SYSTEM = {"to": Origin("system", "context.supplier.email")}


def test_deny_wins_then_approval_then_allow_with_the_rules_named(tmp_path: Path) -> None:
    gov = governance(tmp_path)
    big = gov.decide(pay, Pay(to="acme@example.com", amount=Decimal("5000")), SYSTEM)
    assert (big.verdict, big.rules) == ("deny", ("policy:pay-over-1000",))
    assert big.reason == "payments above 1000 go through finance"
    outside = gov.decide(pay, Pay(to="x@partner.test", amount=Decimal("5")), SYSTEM)
    assert (outside.verdict, outside.tier) == ("approval", "medium")
    assert outside.rules == ("grant:clerk.pay", "policy:pay-outside")
    known = gov.decide(pay, Pay(to="acme@example.com", amount=Decimal("5")), SYSTEM)
    assert (known.verdict, known.rules) == ("allow", ("grant:clerk.pay", "policy:pay-known"))
    # Where the payee came from decides too: from a ticket's text, it is denied.
    injected = gov.decide(
        pay,
        Pay(to="acme@example.com", amount=Decimal("5")),
        {"to": Origin("untrusted", "task.ticket.text")},
    )
    assert (injected.verdict, injected.rules) == ("deny", ("policy:pay-from-text",))


def test_a_rule_never_widens_a_grant(tmp_path: Path) -> None:
    allow_all = Policy((Rule("everything", "allow", tools=("*",)),))
    topology = fleet([say("-")], grants=())
    gov = Governance(topology.agents()["clerk"], allow_all)
    decision = gov.decide(pay, Pay(to="acme@example.com", amount=Decimal("5")), SYSTEM)
    assert (decision.verdict, decision.rules) == ("deny", ("role:clerk",))


def test_a_policy_naming_what_the_topology_lacks_is_refused() -> None:
    with pytest.raises(TopologyError) as caught:
        dataclasses.replace(
            fleet([say("-")], grants=(Grant("pay", tier="low"),)),
            policy=Policy((Rule("r", "deny", tools=("refund",), agents=("bot*",)),)),
        )
    assert "t.policy.rules[0].tools: 'refund' matches no tool of the topology" in str(caught.value)
    assert "t.policy.rules[0].agents: 'bot*' matches no agent of the topology" in str(caught.value)


def test_the_gate_records_the_rules_that_decided(store: Store) -> None:
    policy = Policy(
        (Rule("no-big-pay", "deny", tools=("pay",), when=(When("amount", "ge", "100"),)),)
    )
    topology: Topology = dataclasses.replace(
        fleet(
            [call("pay", to="a@x.test", amount="150"), call("pay", to="a@x.test", amount="50"),
             say("done")],
            grants=(Grant("pay", tier="low"),),
        ),
        policy=policy,
    )  # fmt: skip
    run = Run(store, topology)
    assert run.stages(1)[2:] == [
        ("governance", "deny"),
        ("budget", "settled"),
        ("record", "denied"),
    ]
    assert run.stages(2)[2] == ("governance", "allow")
    [denied] = [r.fields for r in store.audit.records() if r.fields["decision"] == "deny"]
    assert denied["rules"] == ["policy:no-big-pay"] and denied["stage"] == "governance"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def test_the_benchmark_policy_decides_as_its_cedar_twin() -> None:
    from bench.policy import Decider, agree, sliced_as_whole

    decider = Decider()
    decided = agree(decider)
    assert [(name, ours) for name, ours, _ in decided] == [
        (name, cedar) for name, _, cedar in decided
    ]
    assert {ours for _, ours, _ in decided} == {True, False}  # both outcomes are exercised
    # Cedar is timed over the policies a call to its tool can match, as tether's index
    # runs only that tool's rules: each slice decides as the whole set does.
    sliced = sliced_as_whole(decider)
    assert [(name, s) for name, s, _ in sliced] == [(name, w) for name, _, w in sliced]
