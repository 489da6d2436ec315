"""The gate, stage by stage, without Ray: each test is one small story."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolCall, ToolContext, call, calls, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import ApprovalError, TransientToolError
from tether.memory.events import (
    ActionExecuted,
    ActionRecorded,
    ActionVerified,
    BudgetReserved,
    EffectApplied,
    Event,
    StageEvent,
    agent_stream_id,
    effect_stream_id,
)
from tether.memory.store import new_event
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    AllowedValues,
    ApprovalThreshold,
    Budget,
    Grant,
    Role,
    SpendCap,
    Supervisor,
    Topology,
)


class Pay(BaseModel):
    to: str
    amount: Decimal


calls_made: list[dict[str, Any]] = []


@tool(destructive=True)
def pay(args: Pay, ctx: ToolContext) -> dict[str, Any]:
    """Pay someone."""
    calls_made.append({"to": args.to, "amount": str(args.amount), "key": ctx.idempotency_key})
    return {"to": args.to, "amount": str(args.amount), "status": "paid"}


class Nothing(BaseModel):
    pass


@tool(read_only=True)
def noop(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing."""
    return {}


flaky_failures: list[int] = []


@tool(idempotent=True)
def flaky(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Fail transiently while the list has entries."""
    if flaky_failures:
        flaky_failures.pop()
        raise TransientToolError("flaky", "503 from upstream")
    return {"ok": True}


@tool(verify=lambda args, result: None if result.get("ok") else "upstream said not ok")
def unreliable(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Return a result that fails its post-condition."""
    return {"ok": False}


@tool()
def broken(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Raise a plain bug."""
    raise KeyError("customer")


ALL_TOOLS = (pay, noop, flaky, unreliable, broken)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    calls_made.clear()
    flaky_failures.clear()
    crash_next.clear()
    yield


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


def fleet(
    script: list[Any],
    *,
    grants: tuple[Grant, ...] = (),
    rails: tuple[Any, ...] = (),
    steps: int | None = None,
    root_steps: int | None = None,
) -> Topology:
    return Topology(
        name="t",
        root=Supervisor(
            name="root",
            budget=Budget(steps=root_steps),
            children=(
                Agent(
                    name="clerk",
                    role=Role("clerk", grants=grants),
                    model=ScriptedModel(script),
                    tools=ALL_TOOLS,
                    rails=rails,
                    budget=Budget(steps=steps),
                ),
            ),
        ),
    )


class Run:
    """One episode of a one-agent fleet, in process."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        context: dict[str, Any] | None = None,
        *,
        first_id: int = 1,
    ) -> None:
        self.store = store
        self.topology = topology
        self.clock, self.ids = StepClock(), SequentialIds(first_id)
        self.report = self._supervisor().start({"do": "it"}, context or {})
        self.episode = self.report.episode_id

    def _supervisor(self) -> RootSupervisor:
        host = Host(self.topology, self.store, self.clock, self.ids)
        return RootSupervisor(self.topology, self.store, LocalHost(host), self.clock, self.ids)

    def resume(self) -> None:
        # A fresh host: everything it knows comes from the store.
        self.report = self._supervisor().resume(self.episode)

    def events(self) -> list[Event]:
        return self.store.read(agent_stream_id(self.episode, "clerk"))

    def stages(self, action: int) -> list[tuple[str, str]]:
        return [
            (e.stage, e.decision)
            for e in self.events()
            if isinstance(e, StageEvent) and e.action == action
        ]

    def reasons(self, action: int) -> str:
        return " | ".join(
            e.reason for e in self.events() if isinstance(e, StageEvent) and e.action == action
        )


LOW_PAY = Grant("pay", tier="low")
FULL = (
    "boundaries",
    "budget",
    "governance",
    "approval",
    "execution",  # the attempt starts (written ahead of a side effect)
    "execution",  # and ends
    "verification",
    "budget",
    "record",
)


# --- 1. boundaries --------------------------------------------------------------------


def test_arguments_that_fail_the_schema_are_denied_with_the_reason(store: Store) -> None:
    # The model sends "lots" as an amount; the schema refuses it and nothing runs.
    run = Run(
        store, fleet([call("pay", to="a@x.test", amount="lots"), say("done")], grants=(LOW_PAY,))
    )
    assert run.stages(1) == [("boundaries", "deny"), ("record", "denied")]
    assert "amount" in run.reasons(1)
    assert calls_made == []
    assert run.report.status == "completed"  # a denial is an observation, not a crash


def test_an_unknown_tool_is_denied(store: Store) -> None:
    run = Run(store, fleet([call("wire_money", to="x"), say("done")]))
    assert run.stages(1) == [("boundaries", "deny"), ("record", "denied")]
    assert "unknown tool 'wire_money'" in run.reasons(1)


def test_the_recipient_allowlist_comes_from_trusted_records(store: Store) -> None:
    # The allowlist is the supplier's address from the context, not anything the model says.
    rails = (AllowedValues(tool="pay", field="to", from_context="supplier.email"),)
    run = Run(
        store,
        fleet(
            [
                call("pay", to="mallory@evil.test", amount="5"),
                call("pay", to="ACME@example.com", amount="5"),
                say("done"),
            ],
            grants=(LOW_PAY,),
            rails=rails,
        ),
        context={"supplier": {"email": "acme@example.com"}},
    )
    assert run.stages(1)[0] == ("boundaries", "deny")
    assert "allow:pay.to" in run.reasons(1)
    assert [s for s, _ in run.stages(2)] == list(FULL)  # case differs, address matches
    assert [c["to"] for c in calls_made] == ["ACME@example.com"]


def test_spend_caps_hold_per_call_and_per_episode(store: Store) -> None:
    rails = (
        SpendCap(tool="pay", field="amount", per_call=Decimal("100"), per_episode=Decimal("150")),
    )
    run = Run(
        store,
        fleet(
            [
                call("pay", to="a@x.test", amount="101"),
                call("pay", to="a@x.test", amount="100"),
                call("pay", to="a@x.test", amount="60"),
                say("done"),
            ],
            grants=(LOW_PAY,),
            rails=rails,
        ),
    )
    assert "per-call cap 100" in run.reasons(1)
    assert run.stages(2)[-1] == ("record", "executed")
    assert "over the cap 150" in run.reasons(3)  # 100 spent + 60 > 150
    assert [c["amount"] for c in calls_made] == ["100"]


# --- 2. budget ------------------------------------------------------------------------


def test_an_agent_out_of_steps_is_denied_at_the_budget(store: Store) -> None:
    run = Run(
        store, fleet([call("noop"), call("noop"), say("done")], grants=(Grant("noop"),), steps=1)
    )
    assert run.stages(1)[-1] == ("record", "executed")
    assert run.stages(2) == [("boundaries", "pass"), ("budget", "deny"), ("record", "denied")]
    assert "no step left on clerk's budget (limit 1)" in run.reasons(2)


def test_the_supervisors_budget_binds_every_agent(store: Store) -> None:
    # Each agent may take 2 steps, but the two share the supervisor's 3.
    def agent(name: str, script: list[Any], handoffs: tuple[str, ...] = ()) -> Agent:
        return Agent(
            name=name,
            role=Role(name, grants=(Grant("noop"),)),
            tools=(noop,),
            model=ScriptedModel(script),
            budget=Budget(steps=2),
            handoffs=handoffs,
        )

    topology = Topology(
        name="t",
        root=Supervisor(
            name="root",
            budget=Budget(steps=3),
            children=(
                agent(
                    "opener",
                    [call("noop"), call("handoff", to="clerk", reason="yours")],
                    handoffs=("clerk",),
                ),
                agent("clerk", [call("noop"), call("noop"), say("done")]),
            ),
        ),
    )
    run = Run(store, topology)
    assert run.stages(1)[-1] == ("record", "executed")
    assert run.stages(2)[1] == ("budget", "deny")
    assert "no step left on root's budget (limit 3)" in run.reasons(2)


def test_a_step_is_released_when_governance_denies(store: Store) -> None:
    # noop is not granted: the reserved step goes back to the ledger.
    run = Run(store, fleet([call("noop"), say("done")], steps=3))
    assert run.stages(1) == [
        ("boundaries", "pass"),
        ("budget", "reserved"),
        ("governance", "deny"),
        ("budget", "settled"),
        ("record", "denied"),
    ]
    reserved = [e for e in run.events() if isinstance(e, BudgetReserved)]
    assert reserved[0].left == {"clerk": 2, "root": None}


# --- 3. governance --------------------------------------------------------------------


def test_an_ungranted_tool_is_denied_by_role(store: Store) -> None:
    run = Run(store, fleet([call("pay", to="a@x.test", amount="1"), say("done")]))
    assert ("governance", "deny") in run.stages(1)
    assert "role 'clerk' is not granted tool 'pay'" in run.reasons(1)
    assert calls_made == []


def test_a_medium_tier_tool_needs_a_person(store: Store) -> None:
    # flaky is neither read-only nor destructive: tier medium, so it waits.
    run = Run(store, fleet([call("flaky"), say("done")], grants=(Grant("flaky"),)))
    assert run.report.status == "waiting"
    assert run.stages(1)[-1] == ("approval", "waiting")


# --- 4. approval ----------------------------------------------------------------------


def threshold_fleet(script: list[Any]) -> Topology:
    return fleet(
        script,
        grants=(
            Grant(
                "pay", tier="low", approval=ApprovalThreshold(field="amount", above=Decimal("100"))
            ),
        ),
    )


def test_above_the_threshold_an_action_waits_then_runs_once_approved(store: Store) -> None:
    run = Run(store, threshold_fleet([call("pay", to="a@x.test", amount="120"), say("paid")]))
    assert run.report.status == "waiting"
    inbox = Inbox(store, StepClock())
    [item] = inbox.items("pending")
    assert (item.request.tool, item.request.arguments["amount"]) == ("pay", "120")
    assert calls_made == []
    inbox.approve(item.id, "alice", "invoice checked")
    run.resume()
    assert run.report.status == "completed"
    assert run.stages(1)[3:5] == [("approval", "waiting"), ("approval", "granted")]
    assert "granted by alice: invoice checked" in run.reasons(1)
    assert len(calls_made) == 1


def test_a_denied_request_is_told_to_the_agent(store: Store) -> None:
    run = Run(store, threshold_fleet([call("pay", to="a@x.test", amount="120"), say("gave up")]))
    inbox = Inbox(store, StepClock())
    [item] = inbox.items("pending")
    inbox.deny(item.id, "bob", "not our supplier")
    run.resume()
    assert run.stages(1)[-3:] == [
        ("approval", "denied"),
        ("budget", "settled"),
        ("record", "denied"),
    ]
    recorded = [e for e in run.events() if isinstance(e, ActionRecorded)]
    assert "denied by bob: not our supplier" in recorded[0].observation
    assert calls_made == []
    assert run.report.output == "gave up"


def test_a_request_is_decided_once_and_never_by_its_agent(store: Store) -> None:
    run = Run(store, threshold_fleet([call("pay", to="a@x.test", amount="120"), say("ok")]))
    inbox = Inbox(store, StepClock())
    [item] = inbox.items("pending")
    with pytest.raises(ApprovalError, match="cannot approve its own request"):
        inbox.approve(item.id, "clerk", "me")
    inbox.approve(item.id, "alice", "fine")
    with pytest.raises(ApprovalError, match="already granted by alice"):
        inbox.deny(item.id, "bob", "too late")
    assert run.report.status == "waiting"


def test_resuming_before_a_decision_keeps_waiting(store: Store) -> None:
    run = Run(store, threshold_fleet([call("pay", to="a@x.test", amount="120"), say("ok")]))
    run.resume()
    assert run.report.status == "waiting"
    assert calls_made == []


# --- 5. execution ---------------------------------------------------------------------


def test_transient_failures_are_retried_and_counted(store: Store) -> None:
    flaky_failures.extend([1, 1])  # two 503s, then success
    run = Run(store, fleet([call("flaky"), say("done")], grants=(Grant("flaky", tier="low"),)))
    executed = [e for e in run.events() if isinstance(e, ActionExecuted)]
    assert executed[0].decision == "ok"
    assert executed[0].attempts == 3


def test_a_tool_that_raises_fails_the_action_not_the_agent(store: Store) -> None:
    run = Run(
        store, fleet([call("broken"), say("carried on")], grants=(Grant("broken", tier="low"),))
    )
    assert run.stages(1)[-3:] == [
        ("execution", "error"),
        ("budget", "settled"),
        ("record", "failed"),
    ]
    assert "KeyError" in run.reasons(1)
    assert run.report.output == "carried on"


def test_an_effect_already_in_the_ledger_is_fed_back_not_repeated(store: Store) -> None:
    # The effect of action 1 was recorded before a crash; running it again must not pay twice.
    topology = fleet([call("pay", to="a@x.test", amount="5"), say("done")], grants=(LOW_PAY,))
    episode = uuid.UUID(int=1)  # the first id SequentialIds hands out
    key = f"{episode}/clerk/1"
    store.append(
        [
            new_event(
                EffectApplied,
                effect_stream_id(key),
                1,
                StepClock().now(),
                key=key,
                episode_id=episode,
                agent="clerk",
                action=1,
                tool="pay",
                arguments={},
                result={"to": "a@x.test", "status": "paid"},
            )
        ]
    )
    run = Run(store, topology)
    executed = [e for e in run.events() if isinstance(e, ActionExecuted)]
    assert executed[0].effect_replayed and executed[0].attempts == 0
    assert calls_made == []


def test_a_side_effect_is_journaled_under_its_idempotency_key(store: Store) -> None:
    run = Run(
        store, fleet([call("pay", to="a@x.test", amount="5"), say("done")], grants=(LOW_PAY,))
    )
    key = f"{run.episode}/clerk/1"
    [effect] = store.read(effect_stream_id(key))
    assert isinstance(effect, EffectApplied)
    assert effect.result["status"] == "paid"
    assert calls_made[0]["key"] == key


# --- 6. verification ------------------------------------------------------------------


def test_a_failed_post_condition_fails_the_step(store: Store) -> None:
    run = Run(
        store, fleet([call("unreliable"), say("noted")], grants=(Grant("unreliable", tier="low"),))
    )
    assert run.stages(1)[-4:] == [
        ("execution", "ok"),
        ("verification", "fail"),
        ("budget", "settled"),
        ("record", "failed"),
    ]
    assert "upstream said not ok" in run.reasons(1)


def test_a_result_with_nothing_to_check_is_recorded_as_unverified(store: Store) -> None:
    # noop declares no post-condition: verification skips it, and says so in the event
    # and in the signed audit record, so a verified result and this one differ there.
    run = Run(store, fleet([call("noop"), say("done")], grants=(Grant("noop"),)))
    [verified] = [e for e in run.events() if isinstance(e, ActionVerified)]
    assert (verified.decision, verified.reason) == ("skipped", "no post-condition declared")
    [audited] = [r.fields for r in store.audit.records() if r.fields.get("stage") == "verification"]
    assert audited["decision"] == "skipped"
    assert audited["event"].endswith(f"/{verified.originator_version}")


# --- 7. record ------------------------------------------------------------------------


def test_every_stage_of_an_allowed_action_is_an_event_in_order(store: Store) -> None:
    run = Run(store, fleet([call("noop"), say("done")], grants=(Grant("noop"),)))
    assert [s for s, _ in run.stages(1)] == list(FULL)
    assert all(e.reason for e in run.events() if isinstance(e, StageEvent))


def test_a_gate_submission_outside_the_loop_is_governed_too(store: Store) -> None:
    # Host.act is what the benchmark measures: one governed no-op, recorded.
    topology = fleet([say("idle")], grants=(Grant("noop"),))
    clock, ids = StepClock(), SequentialIds()
    host = Host(topology, store, clock, ids)
    report = RootSupervisor(topology, store, LocalHost(host), clock, ids).start({}, {})
    result = host.act(report.episode_id, "clerk", ToolCall("noop", {}, id="c1"))
    assert result.outcome == "executed"
    events = store.read(agent_stream_id(report.episode_id, "clerk"))
    assert sum(isinstance(e, StageEvent) for e in events) == len(FULL)


# --- what a crash leaves behind -------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying (kill -9) in the middle of a tool call."""


crash_next: list[bool] = []


@tool(destructive=True, idempotent=True)
def transfer(args: Pay, ctx: ToolContext) -> dict[str, Any]:
    """Move money (the bank dedupes by the idempotency key); the first call dies halfway."""
    calls_made.append({"to": args.to, "amount": str(args.amount), "key": ctx.idempotency_key})
    if crash_next:
        crash_next.pop()
        raise Crash
    return {"to": args.to, "status": "moved"}


def test_an_action_cut_short_by_a_crash_runs_again_under_the_same_key(store: Store) -> None:
    # The decision was written ahead of the effect; the process died inside the tool.
    topology = Topology(
        name="t",
        root=Supervisor(
            name="root",
            children=(
                Agent(
                    name="clerk",
                    role=Role("clerk", grants=(Grant("transfer", tier="low"),)),
                    model=ScriptedModel(
                        [call("transfer", to="a@x.test", amount="5"), say("moved")]
                    ),
                    tools=(transfer,),
                ),
            ),
        ),
    )
    crash_next.append(True)
    with pytest.raises(Crash):
        Run(store, topology)
    # Resuming from the store alone finishes it: the tool sees the same idempotency key, the
    # ledger holds the effect once, and the action is recorded once.
    clock, ids = StepClock(), SequentialIds(start=100)
    host = Host(topology, store, clock, ids)
    episode = uuid.UUID(int=1)
    report = RootSupervisor(topology, store, LocalHost(host), clock, ids).resume(episode)
    assert report.status == "completed" and report.output == "moved"
    assert [c["key"] for c in calls_made] == [f"{episode}/clerk/1"] * 2
    assert len(store.read(effect_stream_id(f"{episode}/clerk/1"))) == 1
    events = store.read(agent_stream_id(episode, "clerk"))
    assert sum(isinstance(e, ActionRecorded) for e in events) == 1
    # The record says so: two attempts, the first cut short.
    [executed] = [e for e in events if isinstance(e, ActionExecuted)]
    assert executed.attempt == 2
    assert executed.reason == "ran in 2 attempts; the first was cut short by a crash"


def test_an_agent_that_crashes_fails_the_episode_with_the_error(store: Store) -> None:
    def explode(request: Any) -> Any:
        raise ZeroDivisionError("bad script")

    topology = fleet([explode])
    once = dataclasses.replace(topology.agents()["clerk"], restart="temporary")
    run = Run(
        store,
        dataclasses.replace(topology, root=dataclasses.replace(topology.root, children=(once,))),
    )
    assert run.report.status == "waiting"  # not restarted: escalated to a person
    assert run.report.output == "crashed: ZeroDivisionError: bad script"
    [failed] = [e for e in run.events() if e.__class__.__name__ == "AgentFailed"]
    assert failed.reason == "crashed: ZeroDivisionError: bad script"


def test_rails_are_checked_again_when_a_person_approves(store: Store) -> None:
    # Two refunds wait; each fits the episode's cap alone, not together.
    topology = fleet(
        [
            calls_turn(
                ("pay", {"to": "a@x.test", "amount": "120"}),
                ("pay", {"to": "a@x.test", "amount": "120"}),
            ),
            say("done"),
        ],
        grants=(Grant("pay", tier="low", approval=ApprovalThreshold("amount", Decimal(100))),),
        rails=(SpendCap(tool="pay", field="amount", per_episode=Decimal("200")),),
    )
    run = Run(store, topology)
    inbox = Inbox(store, StepClock())
    for item in inbox.items("pending"):
        inbox.approve(item.id, "alice", "ok")
    run.resume()
    assert run.stages(1)[-1] == ("record", "executed")
    assert run.stages(2)[-3:] == [
        ("boundaries", "deny"),
        ("budget", "settled"),
        ("record", "denied"),
    ]
    assert "checked again after approval" in run.reasons(2)
    assert len(calls_made) == 1


def calls_turn(*pairs: tuple[str, dict[str, Any]]) -> Any:
    return calls(*(ToolCall(name, arguments) for name, arguments in pairs))
