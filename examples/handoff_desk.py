"""A handoff desk: run it with `tether run examples/handoff_desk.py`.

A swarm of three: `triage` reads the ticket and passes it, with a reason, to whoever can
act; `billing` looks up the invoice and credits a double charge (capped; above 50 a person
decides); `tech` resets the customer's password. Each may hand off to the others. The
rails tie every credit and reset to the customer on record, never to the ticket's words.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from tether import (
    Agent,
    ApprovalThreshold,
    Budget,
    Grant,
    Provenance,
    Role,
    ScriptedModel,
    SpendCap,
    ToolContext,
    Topology,
    call,
    say,
    swarm,
    tool,
)

INVOICES = {"cus_7": {"invoice": "inv_301", "charged": ["19.99", "19.99"]}}


class Customer(BaseModel):
    customer: str


class Credit(BaseModel):
    customer: str
    amount: Decimal
    reason: str


class Account(BaseModel):
    account: str


@tool(read_only=True, output="system")
def lookup_invoice(args: Customer, ctx: ToolContext) -> dict[str, Any]:
    """The customer's latest invoice and its charges."""
    return INVOICES.get(args.customer, {"invoice": None, "charged": []})


@tool(idempotent=True)
def issue_credit(args: Credit, ctx: ToolContext) -> dict[str, Any]:
    """Credit the customer's account."""
    return {"credited": str(args.amount), "customer": args.customer}


@tool(idempotent=True)
def reset_password(args: Account, ctx: ToolContext) -> dict[str, Any]:
    """Send the account a password-reset link."""
    return {"reset_link_sent": args.account}


on_record = Provenance(tool="issue_credit", field="customer", origins=("system",))

triage = Agent(
    "triage",
    Role("triage"),
    ScriptedModel(
        [call("handoff", to="billing", reason="a double charge; then a login problem")],
        name="triage",
    ),
    instructions="Pass the ticket to whoever can act on it, with the reason.",
    budget=Budget(steps=3),
)
billing = Agent(
    "billing",
    Role(
        "billing",
        (
            Grant("lookup_invoice", tier="low"),
            Grant(
                "issue_credit",
                tier="low",
                approval=ApprovalThreshold("amount", Decimal("50")),
            ),
        ),
    ),
    ScriptedModel(
        [
            call("lookup_invoice", customer="cus_7"),
            call("issue_credit", customer="cus_7", amount="19.99", reason="double charge"),
            call("handoff", to="tech", reason="the customer cannot log in"),
        ],
        name="billing",
    ),
    (lookup_invoice, issue_credit),
    rails=(
        on_record,
        Provenance(tool="lookup_invoice", field="customer", origins=("system",)),
        SpendCap(tool="issue_credit", field="amount", per_call=Decimal("100")),
    ),
    budget=Budget(steps=6),
)
tech = Agent(
    "tech",
    Role("tech", (Grant("reset_password", tier="low"),)),
    ScriptedModel(
        [call("reset_password", account="cus_7"), say("credited 19.99 and sent a reset link")],
        name="tech",
    ),
    (reset_password,),
    rails=(Provenance(tool="reset_password", field="account", origins=("system",)),),
    budget=Budget(steps=4),
)

topology = Topology("handoff_desk", swarm("desk", triage, billing, tech, budget=Budget(steps=15)))
task = {"ticket": {"text": "I was charged twice this month and now I can't log in."}}
context = {"customer": {"id": "cus_7", "email": "ada@example.com"}}
