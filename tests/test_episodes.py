"""Episodic memory: timelines folded from events, with snapshots, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict
from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from typer.testing import CliRunner

from tether.agents import ScriptedModel, ToolCall, ToolContext, calls, say, tool
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory import episodes as episodes_module
from tether.memory.compare import diff_episodes
from tether.memory.episodes import episode_events, fork_episode, list_episodes
from tether.memory.errors import ConfigError
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology, demo


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s


def run_demo(store: Store, first_id: int = 1) -> tuple[Host, RootSupervisor]:
    clock, ids = StepClock(), SequentialIds(first_id)
    host = Host(demo.topology, store, clock, ids)
    return host, RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)


def test_a_snapshot_resumes_the_fold_where_it_stopped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(episodes_module, "SNAPSHOT_EVERY", 10)
    host, supervisor = run_demo(store)
    report = supervisor.start(demo.task, demo.context)
    episode = report.episode_id
    # The first load folds everything and leaves a snapshot behind.
    first = load_timeline(store, episode)
    assert store.snapshots.latest(episode, "timeline") is not None
    # More happens: a person approves, the episode goes on.
    [item] = Inbox(store, StepClock()).items("pending")
    Inbox(store, StepClock()).approve(item.id, "alice", "ok")
    supervisor.resume(episode)
    # From the snapshot plus what came after, the same timeline as folding from scratch.
    with_snapshot = load_timeline(store, episode)
    from_scratch = load_timeline(store, episode, snapshots=False)
    assert asdict(with_snapshot) == asdict(from_scratch)
    assert asdict(with_snapshot) != asdict(first)
    assert with_snapshot.status == "completed"
    assert not host.agent(episode, "refunds").gate.open


def test_a_snapshot_that_cannot_be_read_is_ignored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(episodes_module, "SNAPSHOT_EVERY", 10)
    _, supervisor = run_demo(store)
    episode = supervisor.start(demo.task, demo.context).episode_id
    expected = asdict(load_timeline(store, episode))
    t = store.snapshots.table
    with store.engine.begin() as conn:
        conn.execute(sa.update(t).values(state=b"\x00 garbage"))
    assert asdict(load_timeline(store, episode)) == expected
    assert store.snapshots.drop(episode) == 1
    assert store.snapshots.latest(episode, "timeline") is None


def test_the_episodes_events_include_its_approvals_and_effects(store: Store) -> None:
    _, supervisor = run_demo(store)
    episode = supervisor.start(demo.task, demo.context).episode_id
    [item] = Inbox(store, StepClock()).items("pending")
    Inbox(store, StepClock()).approve(item.id, "alice", "ok")
    supervisor.resume(episode)
    events = episode_events(store, episode)
    ids = [i for i, _ in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    kinds = {type(e).__name__ for _, e in events}
    assert {"ApprovalRequested", "ApprovalGranted", "EffectApplied"} <= kinds


class Amount(BaseModel):
    amount: Decimal


@tool(read_only=True)
def quote(args: Amount, ctx: ToolContext) -> dict[str, object]:
    """Quote an amount."""
    return {"amount": args.amount}


def test_decimals_survive_a_snapshot(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(episodes_module, "SNAPSHOT_EVERY", 1)
    topology = Topology(
        "t",
        Supervisor(
            "root",
            (
                Agent(
                    "a",
                    Role("a", grants=(Grant("quote"),)),
                    ScriptedModel(
                        [calls(ToolCall("quote", {"amount": Decimal("1.10")})), say("x")]
                    ),
                    tools=(quote,),
                ),
            ),
        ),
    )
    clock, ids = StepClock(), SequentialIds()
    host = Host(topology, store, clock, ids)
    supervisor = RootSupervisor(topology, store, LocalHost(host), clock, ids)
    episode = supervisor.start({}, {}).episode_id
    first = load_timeline(store, episode)  # folds and snapshots
    again = load_timeline(store, episode)  # from the snapshot
    assert asdict(first) == asdict(again)
    assert again.agents[0].actions[0].arguments["amount"] == Decimal("1.10")


def test_two_episodes_part_ways_where_a_person_decided_differently(store: Store) -> None:
    # The same ticket twice: one refund approved, the other denied.
    def episode(grant: bool) -> uuid.UUID:
        _, supervisor = run_demo(store, first_id=1 if grant else 1000)
        started = supervisor.start(demo.task, demo.context).episode_id
        inbox = Inbox(store, StepClock())
        [item] = [i for i in inbox.items("pending") if i.request.episode_id == started]
        (inbox.approve if grant else inbox.deny)(item.id, "alice", "checked")
        run_demo(store)[1].resume(started)
        return started

    a, b = episode(grant=True), episode(grant=False)
    found = {d.agent: d for d in diff_episodes(store, a, b)}
    assert found["triage"].divergence is None and found["triage"].same > 5
    part = found["refunds"].divergence
    assert part is not None
    assert (part.event, part.field, part.recorded, part.new) == (
        "ApprovalSettled",
        "decision",
        "granted",
        "denied",
    )
    out = CliRunner().invoke(app, ["diff", str(a), str(b), "--db", store.url])
    assert out.exit_code == 0, out.output
    assert "triage: the same (" in out.output
    assert "(ApprovalSettled.decision): a 'granted', b 'denied'" in out.output


def test_a_fork_shares_the_first_steps_and_continues_live(store: Store) -> None:
    # The original waits for the refund's approval after 3 steps (triage's handoff turn,
    # the lookup, the two refunds). Fork after 2 steps: the fork re-decides the refunds.
    _, supervisor = run_demo(store)
    original = supervisor.start(demo.task, demo.context).episode_id
    forked = fork_episode(store, original, 2, uuid.UUID(int=500), StepClock().now())
    report = run_demo(store, first_id=600)[1].resume(forked)
    assert report.status == "waiting"  # it reached the refund above the threshold again
    a, b = load_timeline(store, original), load_timeline(store, forked)
    shared = [(x.tool, x.outcome) for x in b.agents[1].actions[:1]]
    assert shared == [(x.tool, x.outcome) for x in a.agents[1].actions[:1]]
    # Its own approval request, in its own episode; the original's is untouched.
    pending = {i.request.episode_id for i in Inbox(store, StepClock()).items("pending")}
    assert pending == {original, forked}
    # Budget is cumulative: the fork's ledger starts from the shared steps.
    assert [r.steps_used for r in b.agents] == [r.steps_used for r in a.agents]
    found = {d.agent: d for d in diff_episodes(store, original, forked)}
    assert found["triage"].divergence is None


def test_a_fork_of_a_waiting_action_asks_its_own_person(store: Store) -> None:
    _, supervisor = run_demo(store)
    original = supervisor.start(demo.task, demo.context).episode_id
    forked = fork_episode(store, original, 3, uuid.UUID(int=500), StepClock().now())
    inbox = Inbox(store, StepClock())
    mine = [i for i in inbox.items("pending") if i.request.episode_id == forked]
    assert len(mine) == 1 and mine[0].request.tool == "issue_refund"
    inbox.approve(mine[0].id, "bob", "fine in the fork")
    assert run_demo(store, first_id=600)[1].resume(forked).status == "completed"
    assert [i.request.episode_id for i in inbox.items("pending")] == [original]


def test_forking_beyond_the_episode_says_how_far_it_goes(store: Store) -> None:
    _, supervisor = run_demo(store)
    original = supervisor.start(demo.task, demo.context).episode_id
    with pytest.raises(ConfigError, match="has only 3 steps; choose 0 to 3"):
        fork_episode(store, original, 9, uuid.UUID(int=500), StepClock().now())
    out = CliRunner().invoke(app, ["fork", str(original), "--at", "-1", "--db", store.url])
    assert out.exit_code == 1 and "cannot be negative" in out.output


def test_retention_forgets_finished_episodes_only_and_says_why(store: Store) -> None:
    # Two finished episodes and one waiting for a person; keep only the newest finished one.
    for first_id, approve in ((1, True), (100, True), (200, False)):
        _, supervisor = run_demo(store, first_id=first_id)
        episode = supervisor.start(demo.task, demo.context).episode_id
        if approve:
            inbox = Inbox(store, StepClock())
            [item] = [i for i in inbox.items("pending") if i.request.episode_id == episode]
            inbox.approve(item.id, "alice", "ok")
            run_demo(store, first_id=first_id + 50)[1].resume(episode)
    out = CliRunner().invoke(app, ["retain", "--max-episodes", "1", "--db", store.url])
    assert out.exit_code == 0, out.output
    assert "at most 1 finished episodes" in out.output
    listed = [e.status for e in list_episodes(store)]
    assert sorted(listed) == ["completed", "waiting"]  # the waiting one is never forgotten
    everything = list_episodes(store, forgotten=True)
    assert [e.status for e in everything].count("forgotten") == 1
