"""Side effects after a crash: at least once, never twice unawares.

A crash inside a tool leaves its attempt on record (written ahead of the effect) without
its end. On resume an idempotent tool runs again, a tool that reconciles asks the outside
world first, and any other waits for a person, who finds out and answers: run it again,
or it did (not) happen. The record shows every attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolCall, ToolContext, call, calls, say, tool
from tether.agents.tools import Tool
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory.audit import AuditKey
from tether.memory.coverage import verify_trail
from tether.memory.errors import ConfigError
from tether.memory.events import (
    ActionExecuted,
    ActionRecorded,
    ActionVerified,
    BoundariesChecked,
    EffectApplied,
    EffectUncertain,
    Event,
    ExecutionStarted,
    StageEvent,
    agent_stream_id,
    effect_stream_id,
)
from tether.runtime.escalation import Escalations
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies import (
    Agent,
    ApprovalThreshold,
    Grant,
    RateLimit,
    Role,
    Supervisor,
    Topology,
)


class Refund(BaseModel):
    to: str
    amount: Decimal


class Crash(BaseException):
    """Stands for the process dying (kill -9) in the middle of a tool call."""


world: list[str] = []
"""The payment system: one line per refund it made."""
crash_next: list[bool] = []


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_world() -> None:
    world.clear()
    crash_next.clear()


def refund_fn(args: Refund, ctx: ToolContext) -> dict[str, Any]:
    world.append(ctx.idempotency_key)  # the money leaves, then the process may die
    if crash_next:
        crash_next.pop()
        raise Crash
    return {"to": args.to, "amount": str(args.amount), "status": "refunded"}


def refund_tool(**how: Any) -> Tool:
    return tool(destructive=True, name="refund", **how)(refund_fn)


def desk(refund: Tool) -> Topology:
    return Topology(
        "desk",
        Supervisor(
            "root",
            (
                Agent(
                    "clerk",
                    Role("clerk", (Grant("refund", tier="low"),)),
                    ScriptedModel(
                        [call("refund", to="ada@example.com", amount="120.00"), say("refunded")]
                    ),
                    (refund,),
                ),
            ),
        ),
    )


EPISODE = uuid.UUID(int=1)  # the first id SequentialIds hands out
KEY = f"{EPISODE}/clerk/1"


def crash_once(
    store: Store,
    topology: Topology,
    task: dict[str, Any] | None = None,
    paid: tuple[str, ...] = (KEY,),
) -> None:
    """Run the episode; the process dies inside the (first) refund it makes."""
    crash_next.append(True)
    clock, ids = StepClock(), SequentialIds()
    with pytest.raises(Crash):
        RootSupervisor(
            topology, store, LocalHost(Host(topology, store, clock, ids)), clock, ids
        ).start(task or {"ticket": "refund order 1042"})
    assert world == list(paid)


def resume(store: Store, topology: Topology, start: int = 100) -> EpisodeReport:
    clock, ids = StepClock(), SequentialIds(start=start)
    host = LocalHost(Host(topology, store, clock, ids))
    return RootSupervisor(topology, store, host, clock, ids).resume(EPISODE)


def clerk_events(store: Store) -> list[Event]:
    return store.read(agent_stream_id(EPISODE, "clerk"))


def test_an_idempotent_tool_runs_again_and_the_record_shows_both_attempts(store: Store) -> None:
    topology = desk(refund_tool(idempotent=True))
    crash_once(store, topology)
    # The attempt is on record, started and never finished.
    started = [e for e in clerk_events(store) if isinstance(e, ExecutionStarted)]
    assert [(e.attempt, e.effect_key) for e in started] == [(1, KEY)]
    report = resume(store, topology)
    assert report.status == "completed"
    # It ran again under the same key (the payment system dedupes by it)...
    assert world == [KEY, KEY]
    events = clerk_events(store)
    assert [e.attempt for e in events if isinstance(e, ExecutionStarted)] == [1, 2]
    [executed] = [e for e in events if isinstance(e, ActionExecuted)]
    # ...and the record says so, where replay shows it.
    assert executed.reason == "ran in 2 attempts; the first was cut short by a crash"
    [row] = load_timeline(store, EPISODE).agents[0].actions
    assert ("execution", "started", "attempt 2: the tool is idempotent: run again") in [
        (s.stage, s.decision, s.reason) for s in row.stages
    ]


def test_a_tool_that_is_not_idempotent_waits_for_a_person_instead_of_running_twice(
    store: Store,
) -> None:
    topology = desk(refund_tool())
    crash_once(store, topology)
    report = resume(store, topology)
    # Nothing ran again: a person must find out whether the refund happened.
    assert report.status == "waiting"
    assert world == [KEY]
    [uncertain] = [e for e in clerk_events(store) if isinstance(e, EffectUncertain)]
    assert str(uncertain.escalation_id) in report.waiting
    assert "refund" in uncertain.reason and "may or may not have happened" in uncertain.reason
    assert f"tether inbox resolve {uncertain.escalation_id} --done|--not-done" in uncertain.reason
    [item] = Escalations(store, StepClock()).items()
    assert item.request.options == ["retry", "done", "not-done"]
    assert item.request.partial["idempotency_key"] == KEY
    # Resuming before anyone answers changes nothing: nothing runs, no stage records.
    stages = sum(isinstance(e, StageEvent) for e in clerk_events(store))
    assert resume(store, topology, 200).status == "waiting"
    assert world == [KEY]
    assert sum(isinstance(e, StageEvent) for e in clerk_events(store)) == stages
    # The answers of a supervisor that gave up are not answers here.
    with pytest.raises(ConfigError, match="not an option"):
        Escalations(store, StepClock()).decide(item.id, "accept", "alice", "")
    # The uncertain effect is a decision on record: the trail accounts for it.
    key = AuditKey.load(store.audit_key_path)
    assert verify_trail(store, {key.id: key.public}).intact


def test_resolved_done_records_the_effect_without_running_it_again(store: Store) -> None:
    topology = desk(refund_tool())
    crash_once(store, topology)
    resume(store, topology)
    [item] = Escalations(store, StepClock()).items()
    # Alice checks the payment system: the refund went out.
    Escalations(store, StepClock()).decide(item.id, "done", "alice", "seen in the bank's log")
    report = resume(store, topology, 300)
    assert report.status == "completed" and report.output == "refunded"
    assert world == [KEY]  # once, still
    events = clerk_events(store)
    [executed] = [e for e in events if isinstance(e, ActionExecuted)]
    assert executed.decision == "ok" and executed.attempt == 1
    assert executed.reason == "resolved by alice: seen in the bank's log: it had happened"
    # Not the tool's result, so nothing claims it was checked.
    [verified] = [e for e in events if isinstance(e, ActionVerified)]
    assert verified.decision == "skipped"
    [recorded] = [e for e in events if isinstance(e, ActionRecorded)]
    assert recorded.decision == "executed"
    [effect] = store.read(effect_stream_id(KEY))
    assert isinstance(effect, EffectApplied) and effect.result["resolved"] == "done"


def test_resolved_not_done_fails_the_action_and_the_agent_goes_on(store: Store) -> None:
    topology = desk(refund_tool())
    crash_once(store, topology)
    resume(store, topology)
    [item] = Escalations(store, StepClock()).items()
    Escalations(store, StepClock()).decide(item.id, "not-done", "alice", "no trace at the bank")
    report = resume(store, topology, 300)
    assert report.status == "completed"
    assert world == [KEY]
    [recorded] = [e for e in clerk_events(store) if isinstance(e, ActionRecorded)]
    assert (
        recorded.decision == "failed" and "alice found it had not happened" in recorded.observation
    )
    assert store.read(effect_stream_id(KEY)) == []


def test_a_person_may_have_it_run_again(store: Store) -> None:
    topology = desk(refund_tool())
    crash_once(store, topology)
    resume(store, topology)
    [item] = Escalations(store, StepClock()).items()
    Escalations(store, StepClock()).decide(item.id, "retry", "alice", "the bank has no trace")
    assert resume(store, topology, 300).status == "completed"
    assert world == [KEY, KEY]
    events = clerk_events(store)
    assert [e.reason for e in events if isinstance(e, ExecutionStarted)] == [
        "attempt 1",
        "attempt 2: run again by alice: the bank has no trace",
    ]


def test_a_tool_that_reconciles_asks_the_outside_world_first(store: Store) -> None:
    asked: list[str] = []

    def reconcile(args: Refund, ctx: ToolContext) -> dict[str, Any] | None:
        asked.append(ctx.idempotency_key)
        if ctx.idempotency_key in world:
            return {"to": args.to, "amount": str(args.amount), "status": "refunded"}
        return None

    topology = desk(refund_tool(reconcile=reconcile))
    crash_once(store, topology)
    assert resume(store, topology).status == "completed"
    # The payment system knew the key: its answer is recorded instead of a second refund.
    assert asked == [KEY] and world == [KEY]
    [executed] = [e for e in clerk_events(store) if isinstance(e, ActionExecuted)]
    assert executed.reason == "reconciled: it had happened"
    assert executed.result == {"to": "ada@example.com", "amount": "120.00", "status": "refunded"}


def test_a_tool_that_reconciles_runs_again_when_the_effect_did_not_happen(store: Store) -> None:
    def reconcile(args: Refund, ctx: ToolContext) -> dict[str, Any] | None:
        return None  # the payment system never saw this key

    topology = desk(refund_tool(reconcile=reconcile))
    crash_once(store, topology)
    world.clear()  # (it died before the money left)
    assert resume(store, topology).status == "completed"
    assert world == [KEY]
    starts = [e.reason for e in clerk_events(store) if isinstance(e, ExecutionStarted)]
    assert starts == ["attempt 1", "attempt 2: reconciled: it had not happened; run again"]


# --- a resumed action passes the rails again, by recorded time --------------------------


def _two_refunds() -> Topology:
    return Topology(
        "desk",
        Supervisor(
            "root",
            (
                Agent(
                    "clerk",
                    Role(
                        "clerk",
                        (Grant("refund", tier="low", approval=ApprovalThreshold("amount", 500)),),
                    ),
                    ScriptedModel(
                        [
                            calls(
                                ToolCall("refund", {"to": "ada@example.com", "amount": "900"}),
                                ToolCall("refund", {"to": "bob@example.com", "amount": "20"}),
                            ),
                            say("done"),
                        ]
                    ),
                    (refund_tool(idempotent=True),),
                    rails=(RateLimit("refund", calls=1, per_s=3600),),
                ),
            ),
        ),
    )


def test_an_action_a_crash_cut_short_is_checked_against_the_rails_again_on_resume(
    store: Store,
) -> None:
    # One refund an hour. The clerk asks for two at once: ada's, above the threshold,
    # waits for a person; bob's goes out, and the process dies inside it.
    topology = _two_refunds()
    ada, bob = f"{EPISODE}/clerk/1", f"{EPISODE}/clerk/2"
    crash_once(store, topology, {"ticket": "two refunds"}, paid=(bob,))
    clock = StepClock()
    # Alice approves ada's refund; on resume it goes out, the hour's one refund.
    [item] = Inbox(store, clock).items("pending")
    Inbox(store, clock).approve(item.id, "alice", "checked")
    assert resume(store, topology).status == "waiting"
    # Bob's, resumed after the crash, is checked again, at the time on record: over the
    # limit now, so it is not run again, and the check that refused it is on record.
    assert world == [bob, ada]
    checks = [e for e in clerk_events(store) if isinstance(e, BoundariesChecked) and e.action == 2]
    assert [c.decision for c in checks] == ["pass", "deny"]
    assert checks[1].reason.startswith("checked again on resume: refund ran 1 times in the last")
    assert [v["rule"] for v in checks[1].violations] == ["rate:refund"]
    # But its first attempt may have paid bob: refusing a re-run does not undo it, so the
    # record does not say "not executed"; a person is asked what happened (not to retry).
    [uncertain] = [e for e in clerk_events(store) if isinstance(e, EffectUncertain)]
    assert uncertain.action == 2 and "the rails now refuse to run it again" in uncertain.reason
    assert "tether inbox retry" not in uncertain.reason
    [asked] = Escalations(store, StepClock()).items()
    Escalations(store, StepClock()).decide(asked.id, "retry", "alice", "try again")
    assert resume(store, topology).status == "completed"
    # A person's retry does not get past the rails either; bob was paid once, by the crash.
    assert world == [bob, ada]
    [recorded] = [e for e in clerk_events(store) if isinstance(e, ActionRecorded) and e.action == 2]
    assert (recorded.decision, recorded.ended_at) == ("denied", "execution")
    assert "denied by boundaries" in recorded.observation
    key = AuditKey.load(store.audit_key_path)
    assert verify_trail(store, {key.id: key.public}).intact


def test_a_refused_rerun_of_an_effect_that_happened_is_recorded_as_a_person_resolves_it(
    store: Store,
) -> None:
    # The same crash, but the person finds bob was paid: the record says it happened.
    topology = _two_refunds()
    crash_once(store, topology, {"ticket": "two refunds"}, paid=(f"{EPISODE}/clerk/2",))
    clock = StepClock()
    [item] = Inbox(store, clock).items("pending")
    Inbox(store, clock).approve(item.id, "alice", "checked")
    assert resume(store, topology).status == "waiting"
    [asked] = Escalations(store, StepClock()).items()
    Escalations(store, StepClock()).decide(asked.id, "done", "alice", "in the bank's log")
    assert resume(store, topology).status == "completed"
    [executed] = [e for e in clerk_events(store) if isinstance(e, ActionExecuted) and e.action == 2]
    assert executed.decision == "ok" and "resolved by alice" in executed.reason
    [recorded] = [e for e in clerk_events(store) if isinstance(e, ActionRecorded) and e.action == 2]
    assert recorded.decision == "executed"


class Nothing(BaseModel):
    pass


@tool(read_only=True)
def tags(args: Nothing, ctx: ToolContext) -> dict[str, Any]:
    """Return something the store cannot record."""
    return {"tags": {"a", "b"}}


def test_a_result_the_store_cannot_record_is_a_tool_error_and_the_agent_goes_on(
    store: Store,
) -> None:
    topology = Topology(
        "t",
        Supervisor(
            "root",
            (
                Agent(
                    "clerk",
                    Role("clerk", (Grant("tags", tier="low"),)),
                    ScriptedModel([call("tags"), say("carried on")]),
                    (tags,),
                ),
            ),
        ),
    )
    clock, ids = StepClock(), SequentialIds()
    host = LocalHost(Host(topology, store, clock, ids))
    report = RootSupervisor(topology, store, host, clock, ids).start({})
    assert report.status == "completed" and report.output == "carried on"
    [executed] = [e for e in clerk_events(store) if isinstance(e, ActionExecuted)]
    assert executed.decision == "error"
    assert "returned a set at result['tags'], which cannot be recorded" in executed.reason


# --- re-execution sees the crash where the run had it ----------------------------------


def test_an_episode_a_crash_cut_short_re_executes_identically(store: Store) -> None:
    from tether.runtime.reexecute import reexecute

    topology = desk(refund_tool(idempotent=True))
    crash_once(store, topology)
    resume(store, topology)
    # Re-execution stops where the run stopped (inside attempt 1), then resumes as it did.
    done = reexecute(store, EPISODE, topology)
    assert done.identical, done.divergence
    assert world == [KEY, KEY]  # and calls no tool


def test_an_uncertain_effect_a_person_resolved_re_executes_identically(store: Store) -> None:
    from tether.runtime.reexecute import reexecute

    topology = desk(refund_tool())
    crash_once(store, topology)
    resume(store, topology)
    [item] = Escalations(store, StepClock()).items()
    Escalations(store, StepClock()).decide(item.id, "done", "alice", "seen in the bank's log")
    resume(store, topology, 300)
    done = reexecute(store, EPISODE, topology)
    assert done.identical, done.divergence


def test_a_reconciled_effect_re_executes_identically(store: Store) -> None:
    from tether.runtime.reexecute import reexecute

    def reconcile(args: Refund, ctx: ToolContext) -> dict[str, Any] | None:
        return {"status": "refunded"} if ctx.idempotency_key in world else None

    topology = desk(refund_tool(reconcile=reconcile))
    crash_once(store, topology)
    resume(store, topology)
    asked = len(world)
    done = reexecute(store, EPISODE, topology)
    assert done.identical, done.divergence
    assert len(world) == asked  # the record answered, not the bank
