"""An expenses desk: run it with `tether run examples/expenses.py`.

`intake` reads an expense claim and hands it to `clerk`, who checks the travel policy and
reimburses the employee. The rails pin the payee to the claimant on record and cap a
single reimbursement; anything above 500 needs a person.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from tether import (
    Agent,
    AllowedValues,
    ApprovalThreshold,
    Budget,
    Grant,
    Role,
    ScriptedModel,
    SpendCap,
    Supervisor,
    ToolContext,
    Topology,
    call,
    say,
    tool,
)

POLICY = {"travel": {"per_claim": "600.00", "receipts": "required above 50.00"}}


class Category(BaseModel):
    category: str = Field(description="Expense category, e.g. travel.")


@tool(read_only=True)
def lookup_policy(args: Category, ctx: ToolContext) -> dict[str, Any]:
    """Read the expense policy for a category."""
    return {"category": args.category, **POLICY.get(args.category, {"per_claim": "0"})}


class Reimbursement(BaseModel):
    employee: str = Field(description="Who is paid back, e.g. emp:42.")
    amount: Decimal = Field(gt=0)
    claim: str


# Idempotent: payroll takes the action's idempotency key as the payment's reference and
# pays once per reference, so a payment a crash cut short is simply run again.
@tool(
    destructive=True,
    idempotent=True,
    verify=lambda args, r: None if r.get("status") == "paid" else "unpaid",
)
def reimburse(args: Reimbursement, ctx: ToolContext) -> dict[str, Any]:
    """Pay an employee back for a claim."""
    return {
        "employee": args.employee,
        "amount": str(args.amount),
        "claim": args.claim,
        "status": "paid",
        "payment": f"pay-{ctx.action}",
        "reference": ctx.idempotency_key,
    }


topology = Topology(
    name="expenses",
    root=Supervisor(
        name="finance",
        budget=Budget(steps=10),
        children=(
            Agent(
                name="intake",
                role=Role("intake"),
                model=ScriptedModel(
                    [
                        call("handoff", to="clerk", reason="a travel claim to reimburse"),
                    ]
                ),
                handoffs=("clerk",),
                budget=Budget(steps=2),
            ),
            Agent(
                name="clerk",
                role=Role(
                    "clerk",
                    grants=(
                        Grant("lookup_policy"),
                        Grant(
                            "reimburse",
                            tier="low",
                            approval=ApprovalThreshold(field="amount", above=Decimal("500")),
                        ),
                    ),
                ),
                model=ScriptedModel(
                    [
                        call("lookup_policy", category="travel"),
                        call("reimburse", employee="emp:42", amount="180.00", claim="EXP-9"),
                        say("Reimbursed 180.00 to emp:42 for EXP-9, within the travel policy."),
                    ]
                ),
                tools=(lookup_policy, reimburse),
                rails=(
                    AllowedValues(tool="reimburse", field="employee", from_context="claimant.id"),
                    SpendCap(tool="reimburse", field="amount", per_call=Decimal("2000")),
                ),
                budget=Budget(steps=6),
            ),
        ),
    ),
)

task = {
    "claim": {
        "id": "EXP-9",
        "category": "travel",
        "amount": "180.00",
        "note": "Train to Lyon for the customer workshop.",
    }
}
context = {"claimant": {"id": "emp:42", "name": "Grace"}}
