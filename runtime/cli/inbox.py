"""The approvals inbox: requests and escalations waiting for a person, and deciding them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from tether.memory.errors import ConfigError
from tether.memory.sources import SystemClock
from tether.memory.store import Store
from tether.runtime.cli._render import _count, _esc, _json, _table, out
from tether.runtime.cli._shared import (
    Approver,
    Db,
    Json,
    Reason,
    _approval_id,
    _current_user,
    _db_flag,
    _escalation_id,
    _prog,
    handled,
)
from tether.runtime.escalation import Escalations
from tether.runtime.inbox import Inbox


@handled
def inbox_list(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
) -> None:
    """Show requests waiting for a person."""

    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        items = inbox.items(None if everything else "pending")
        escalated = Escalations(store, SystemClock()).items()
    # What interrupts a person comes first: high tier, then medium, oldest first.
    items.sort(key=lambda i: (i.status != "pending", i.request.tier != "high"))
    if as_json:
        out.print_json(data=[i.as_dict() for i in items])
        return
    _inbox_table(items)
    if escalated:
        out.print(
            f"{_count(len(escalated), 'escalation')} "
            f"{'waits' if len(escalated) == 1 else 'wait'} for a person: "
            f"{_prog()} inbox escalations{_db_flag(db)}",
            markup=False,
        )
    elif not items:
        out.print("nothing waits for a person")


@handled
def inbox_escalations(
    db: Db = None,
    as_json: Json = False,
    everything: Annotated[bool, typer.Option("--all", help="Include decided ones.")] = False,
) -> None:
    """Episodes whose supervisor gave up and asks a person: retry, accept or abort."""
    with Store(db, mode="existing") as store:
        found = Escalations(store, SystemClock()).items(pending_only=not everything)
    if as_json:
        out.print_json(data=[x.as_dict() for x in found])
        return
    if not found:
        out.print("no escalation waits for a person")
        return
    table = _table("id", "status", "episode", "agent", "why", "partial results", "answers")
    for x in found:
        r = x.request
        partial = _json(r.partial)
        answers = (
            "retry | resolve --done | resolve --not-done"
            if "done" in r.options
            else (" | ".join(r.options))
        )
        cells = (str(x.id), x.status, str(r.episode_id), r.agent, r.reason, partial, answers)
        table.add_row(*map(_esc, cells))
    out.print(table)
    out.print(
        f"decide: {_prog()} inbox retry|accept|abort ID --as NAME --reason WHY{_db_flag(db)}",
        markup=False,
    )
    if any("done" in x.request.options for x in found):
        out.print(
            f"a side effect a crash left uncertain: {_prog()} inbox retry ID, or "
            f"{_prog()} inbox resolve ID --done|--not-done --as NAME --reason WHY{_db_flag(db)}",
            markup=False,
        )


def _escalation(
    escalation: str,
    option: str,
    db: str | None,
    approver: str | None,
    reason: str,
    steps: int = 0,
    tokens: int = 0,
    cost: str = "0",
    seconds: float = 0.0,
) -> None:
    who = approver or _current_user()
    try:
        dollars = Decimal(cost)
    except ArithmeticError:
        raise ConfigError(f"--cost: {cost!r} is not an amount of dollars; give e.g. 2.50") from None
    escalation_id = _escalation_id(escalation, db)
    with Store(db, mode="existing") as store:
        item = Escalations(store, SystemClock()).decide(
            escalation_id,
            option,
            who,
            reason,
            steps=steps,
            tokens=tokens,
            cost=dollars,
            seconds=seconds,
        )
    out.print(f"{item.status}: {item.id} ({item.request.agent}) as {who}", markup=False)
    out.print(
        f"carry it out: {_prog()} resume {item.request.episode_id}{_db_flag(db)}", markup=False
    )


Escalation = Annotated[str, typer.Argument(help="The escalation id.")]


@handled
def inbox_retry(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    steps: Annotated[int, typer.Option("--steps", help="Steps to add to its budget.")] = 0,
    tokens: Annotated[int, typer.Option("--tokens", help="Model tokens to add.")] = 0,
    cost: Annotated[str, typer.Option("--cost", help="Dollars of model spend to add.")] = "0",
    seconds: Annotated[
        float, typer.Option("--seconds", help="Seconds of time to live to add.")
    ] = 0.0,
) -> None:
    """Answer an escalation: restart the agent, with more budget if given."""
    _escalation(escalation, "retry", db, approver, reason, steps, tokens, cost, seconds)


@handled
def inbox_accept(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation: the episode completes with the partial results."""
    _escalation(escalation, "accept", db, approver, reason)


@handled
def inbox_abort(
    escalation: Escalation,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation: the episode fails, with your reason."""
    _escalation(escalation, "abort", db, approver, reason)


@handled
def inbox_resolve(
    escalation: Escalation,
    done: Annotated[
        bool | None,
        typer.Option(
            "--done/--not-done",
            help="What you found: the side effect happened (its action is recorded as done, "
            "not run again), or it did not (the action fails; the agent is told).",
        ),
    ] = None,
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """Answer an escalation about a side effect a crash left uncertain: say whether it
    happened. (To run it again instead: `tether inbox retry ID`.)"""
    if done is None:
        raise ConfigError("say what you found: --done (it happened) or --not-done (it did not)")
    _escalation(escalation, "done" if done else "not-done", db, approver, reason)


def _inbox_table(items: list[Any]) -> None:
    table = _table("id", "status", "tier", "agent", "tool", "arguments", "why", "deadline")
    for i in items:
        r = i.request
        cells = (
            str(i.id),
            i.status,
            r.tier + (" (now)" if r.tier == "high" and i.status == "pending" else ""),
            r.agent,
            r.tool,
            _json(r.arguments),
            r.reason,
            r.deadline.isoformat(timespec="seconds") if r.deadline else "none",
        )
        table.add_row(*map(_esc, cells))
    if items:
        out.print(table)


@handled
def inbox_show(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    as_json: Json = False,
) -> None:
    """Show one request: what, who asked, why, the rules, its deadline and outcome."""

    approval_id = _approval_id(approval, db)
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        item = inbox.get(approval_id)
    data = item.as_dict()
    if as_json:
        out.print_json(data=data)
        return
    for key, value in data.items():
        shown = _json(value) if isinstance(value, dict | list) else value
        out.print(f"{key + ':':16} {shown}", markup=False)


@handled
def inbox_digest(
    db: Db = None,
    as_json: Json = False,
    approve: Annotated[
        str | None,
        typer.Option("--approve", metavar="DIGEST", help="Approve the digest with this id."),
    ] = None,
    deny: Annotated[
        str | None,
        typer.Option("--deny", metavar="DIGEST", help="Deny the digest with this id."),
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option("--except", help="A request to leave pending; repeat for more."),
    ] = None,
    approver: Approver = None,
    reason: Reason = "",
) -> None:
    """The medium-tier batch: show it, then approve or deny it (all, or all --except some)
    in one command, naming the digest id you reviewed."""

    if approve and deny:
        raise ConfigError("--approve and --deny: give one of them")
    left_pending = [str(_approval_id(i, db)) for i in skip or ()]
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        inbox.expire()
        if approve or deny:
            who = approver or _current_user()
            decided = inbox.decide_digest(
                str(approve or deny), bool(approve), who, reason, skip=left_pending
            )
            for item in decided:
                out.print(f"{item.status}: {item.id} ({item.request.tool} by {item.request.agent})")
            left = len(skip or ())
            out.print(
                f"{len(decided)} {'approved' if approve else 'denied'} as {who}"
                + (f"; {left} left pending" if left else "")
                + f". continue each episode with: {_prog()} resume EPISODE{_db_flag(db)}",
                markup=False,
            )
            return
        digest = inbox.digest()
    if as_json:
        out.print_json(data={"digest": digest.id, "items": [i.as_dict() for i in digest.items]})
        return
    if not digest.items:
        out.print("no medium-tier request waits")
        return
    _inbox_table(list(digest.items))
    out.print(
        f"digest {digest.id}: {_count(len(digest.items), 'request')}. decide them all: "
        f"{_prog()} inbox digest --approve {digest.id} [--except ID ...] --reason WHY"
        f"{_db_flag(db)}",
        markup=False,
    )


@handled
def inbox_approve(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Approve a request; `tether resume EPISODE` then carries the action out."""
    _decide(approval, db, approver, reason, grant=True, as_json=as_json)


@handled
def inbox_deny(
    approval: Annotated[str, typer.Argument(help="The request id.")],
    db: Db = None,
    approver: Approver = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Deny a request; the agent is told, and `tether resume EPISODE` lets it go on."""
    _decide(approval, db, approver, reason, grant=False, as_json=as_json)


def _decide(
    approval: str,
    db: str | None,
    approver: str | None,
    reason: str,
    grant: bool,
    as_json: bool = False,
) -> None:

    who = approver or _current_user()
    approval_id = _approval_id(approval, db)
    with Store(db, mode="existing") as store:
        inbox = Inbox(store, SystemClock())
        item = (inbox.approve if grant else inbox.deny)(approval_id, who, reason)
    if as_json:
        out.print_json(data=item.as_dict())
        return
    out.print(
        f"{item.status}: {item.id} ({item.request.tool} by {item.request.agent}) as {who}",
        markup=False,
    )
    out.print(f"continue: {_prog()} resume {item.request.episode_id}{_db_flag(db)}", markup=False)
