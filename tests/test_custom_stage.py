"""A stage a topology adds to the gate, written here and nowhere else: a business-hours
check. Its decisions are on record like any stage's, so the audit trail, the timeline,
``replay --json`` and re-execution show them without knowing its code."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.errors import TopologyError
from tether.memory.events import StageChecked, agent_stream_id
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies import ActionView, Agent, Grant, Role, StageOutcome, Supervisor, Topology


class BusinessHours:
    """Payments go out 9 to 17 on weekdays; outside those hours a person approves each one,
    and on Sundays none goes out. It reads the action's recorded time, never the wall
    clock, so a re-execution decides the same."""

    name = "business_hours"
    after = "governance"

    async def check(self, action: ActionView) -> StageOutcome:
        if action.at.weekday() == 6:
            return StageOutcome("deny", "closed on Sundays", ("hours:sunday",))
        if 9 <= action.at.hour < 17:
            return StageOutcome("pass", f"{action.at:%H:%M} is within business hours")
        return StageOutcome(
            "approval", f"{action.at:%H:%M} is outside business hours", ("hours:9-17",), "high"
        )


class Wire(BaseModel):
    to: str
    amount: Decimal


paid: list[str] = []


@tool(destructive=True)
def wire(args: Wire, ctx: ToolContext) -> dict[str, Any]:
    """Send money."""
    paid.append(args.to)
    return {"to": args.to, "amount": str(args.amount), "status": "sent"}


TOPOLOGY = Topology(
    "treasury",
    Supervisor(
        "root",
        (
            Agent(
                "payer",
                # Governance alone would let it pay at once: the tier is low.
                Role("payer", (Grant("wire", tier="low"),)),
                ScriptedModel([call("wire", to="acme", amount="90.00"), say("paid")]),
                (wire,),
            ),
        ),
    ),
    stages=(BusinessHours(),),
)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    paid.clear()
    with Store(sqlite_url) as s:
        yield s


def run_at(store: Store, start: datetime, first_id: int = 1) -> tuple[EpisodeReport, StepClock]:
    clock, ids = StepClock(start), SequentialIds(first_id)
    host = LocalHost(Host(TOPOLOGY, store, clock, ids))
    return RootSupervisor(TOPOLOGY, store, host, clock, ids).start({"pay": "acme"}), clock


def resume(store: Store, episode: uuid.UUID, clock: StepClock) -> EpisodeReport:
    ids = SequentialIds(100)
    host = LocalHost(Host(TOPOLOGY, store, clock, ids))
    return RootSupervisor(TOPOLOGY, store, host, clock, ids).resume(episode)


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def checked(store: Store, episode: uuid.UUID) -> list[StageChecked]:
    stream = store.read(agent_stream_id(episode, "payer"))
    return [e for e in stream if isinstance(e, StageChecked)]


def test_within_business_hours_the_stage_passes_and_says_so(store: Store) -> None:
    # Monday 10:00: the payment goes out, and the stage's pass is on record.
    report, _ = run_at(store, datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    assert report.status == "completed" and paid == ["acme"]
    [passed] = checked(store, report.episode_id)
    assert (passed.stage, passed.decision) == ("business_hours", "pass")
    assert passed.reason == "10:00 is within business hours"


def test_after_hours_a_person_approves_and_every_record_shows_the_stage(
    store: Store, sqlite_url: str
) -> None:
    # Monday 20:00: governance allows the payment, the business-hours stage asks a person.
    report, clock = run_at(store, datetime(2026, 3, 2, 20, 0, tzinfo=UTC))
    assert report.status == "waiting" and paid == []
    [asked] = checked(store, report.episode_id)
    assert (asked.stage, asked.decision, asked.tier) == ("business_hours", "approval", "high")
    assert asked.rules == ["hours:9-17"]
    # The approval stage asks exactly as it does for governance: the inbox names the rule.
    [item] = Inbox(store, clock).items("pending")
    assert (item.request.tier, item.request.rules) == ("high", ["hours:9-17"])
    assert item.request.reason == "20:00 is outside business hours"
    Inbox(store, clock).approve(item.id, "alice", "month-end run")
    assert resume(store, report.episode_id, clock).status == "completed"
    assert paid == ["acme"]
    episode = str(report.episode_id)

    # The audit trail: a signed record of the stage's decision, and nothing uncovered.
    records = [r.fields for r in store.audit.records()]
    [audited] = [r for r in records if r.get("stage") == "business_hours"]
    assert (audited["decision"], audited["tier"], audited["rules"]) == (
        "approval",
        "high",
        ["hours:9-17"],
    )
    assert "each accounted for" in cli("audit", "verify", "--db", sqlite_url)

    # The timeline, as `tether replay` prints it: the stage's row, its reason, its rules.
    tree = " ".join(cli("replay", episode, "--db", sqlite_url).split())
    assert "business_hours approval 20:00 is outside business hours" in tree
    assert "(tier high; rules hours:9-17)" in tree
    assert "approval granted granted by alice: month-end run" in tree

    # replay --json: the generic event, readable without the stage's code.
    events = json.loads(cli("replay", episode, "--json", "--db", sqlite_url))
    [shown] = [e for e in events if e["type"] == "StageChecked"]
    assert {k: shown[k] for k in ("stage", "decision", "reason", "rules", "tier")} == {
        "stage": "business_hours",
        "decision": "approval",
        "reason": "20:00 is outside business hours",
        "rules": ["hours:9-17"],
        "tier": "high",
    }

    # Re-execution runs the stage again on the recorded time: the same decision.
    done = reexecute(store, report.episode_id, TOPOLOGY)
    assert done.identical, done.divergence
    assert paid == ["acme"]  # and no payment went out again


def test_on_sunday_the_stage_denies_and_the_action_ends_there(store: Store) -> None:
    report, _ = run_at(store, datetime(2026, 3, 8, 11, 0, tzinfo=UTC))
    assert report.status == "completed" and paid == []
    [denied] = checked(store, report.episode_id)
    assert (denied.decision, denied.rules) == ("deny", ["hours:sunday"])
    stream = store.read(agent_stream_id(report.episode_id, "payer"))
    [recorded] = [e for e in stream if type(e).__name__ == "ActionRecorded"]
    assert (recorded.decision, recorded.ended_at) == ("denied", "business_hours")
    assert recorded.observation == "denied by business_hours: closed on Sundays"
    assert reexecute(store, report.episode_id, TOPOLOGY).identical


def test_a_stage_in_no_place_of_the_gate_is_refused_with_the_places() -> None:
    class Nowhere(BusinessHours):
        after = "execution"

    with pytest.raises(TopologyError, match=r"treasury.stages\[0\].after: must be one of"):
        Topology("treasury", TOPOLOGY.root, stages=(Nowhere(),))


def test_a_stage_named_like_one_of_the_gates_own_is_refused_before_anything_runs() -> None:
    # Refused when the topology is built, so no episode is ever started with it.
    class Budget(BusinessHours):
        name = "budget"

    with pytest.raises(TopologyError, match=r"treasury.stages\[0\].name: 'budget' is one of"):
        Topology("treasury", TOPOLOGY.root, stages=(Budget(),))


def test_the_topology_knows_the_gates_stages_by_the_names_the_gate_runs() -> None:
    from tether.runtime.stages import BUILT_IN
    from tether.topologies.stage import GATE

    assert GATE == tuple(stage.name for stage in BUILT_IN)
