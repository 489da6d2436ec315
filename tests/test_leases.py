"""One runner per episode: a lease in the store, and a fencing token on every append.

The reproduction a new user hit: a tool that takes a while pays; while it runs, a second
`tether resume` of the same episode ran the tool too, and the record hid it. Now the
second runner is told who runs the episode and runs nothing; one that takes over by force
fences the first out, so the first records nothing more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.memory import SequentialIds, StepClock, Store
from tether.memory.audit import AuditKey
from tether.memory.coverage import verify_trail
from tether.memory.errors import EpisodeLeased, LeaseLost, StreamConflict
from tether.memory.events import (
    ActionExecuted,
    EffectUncertain,
    EpisodeCancelled,
    EpisodeResumed,
    EpisodeStarted,
    EpisodeTakenOver,
    agent_stream_id,
)
from tether.memory.leases import Fence, Leases
from tether.memory.store import new_event
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology

EPISODE = uuid.UUID(int=1)


# --- the lease itself -------------------------------------------------------------------


class Now:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_second_runner_is_told_who_holds_the_episode(store_url: str) -> None:
    with Store(store_url) as store:
        leases = Leases(store.backend, Now())
        first, taken = leases.take(EPISODE, "tether run by ada", host="host-a", pid=os.getpid())
        assert (first.token, taken) == (1, None)
        with pytest.raises(EpisodeLeased) as e:
            leases.take(EPISODE, "tether resume by bob")
        # One line: who, where, until when, and what to do.
        message = str(e.value)
        assert message.startswith(f"episode {EPISODE} is being run by pid {os.getpid()} on host-a")
        assert "(lease until " in message
        assert message.endswith("wait, or 'tether resume --take-over'")
        assert leases.current(EPISODE) == first  # nothing changed


def test_an_expired_lease_or_a_dead_owner_is_taken_over_with_a_new_token(store_url: str) -> None:
    with Store(store_url) as store:
        now = Now()
        leases = Leases(store.backend, now)
        first, _ = leases.take(EPISODE, "run", ttl_s=30, host="elsewhere", pid=1)
        now.t += 31  # the runner stopped renewing
        second, taken = leases.take(EPISODE, "resume")
        assert second.token == 2
        assert taken == (first, "its lease had expired")
        # A process of this host that is gone holds nothing.
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        third, taken = leases.take(
            uuid.UUID(int=2), "run", pid=gone.pid
        )  # (a second episode, run by a process that has exited)
        fourth, taken = leases.take(uuid.UUID(int=2), "resume")
        assert fourth.token == 2 and taken == (
            third,
            f"its process (pid {gone.pid}) is gone from {third.host}",
        )


def test_take_over_forces_it_and_the_old_token_cannot_renew(store_url: str) -> None:
    with Store(store_url) as store:
        leases = Leases(store.backend, Now())
        first, _ = leases.take(EPISODE, "run")
        second, taken = leases.take(EPISODE, "resume", take_over=True)
        assert second.token == 2 and taken == (first, "taken over by force (--take-over)")
        with pytest.raises(LeaseLost, match="token 1"):
            leases.renew(first)
        assert not leases.release(first)  # not its to release
        assert leases.release(second)
        third, taken = leases.take(EPISODE, "resume again")  # released: free, nothing taken
        assert (third.token, taken) == (3, None)


# --- the fence on every append --------------------------------------------------------


def started(episode: uuid.UUID, version: int = 1) -> EpisodeStarted:
    return new_event(
        EpisodeStarted,
        episode,
        version,
        StepClock().now(),
        topology="t",
        source={},
        agents=[],
        entry="a",
        input={},
        context={},
    )


def test_an_append_with_a_stale_token_is_refused_and_writes_nothing(store_url: str) -> None:
    with Store(store_url) as store:
        first, _ = store.leases.take(EPISODE, "run")
        store.append([started(EPISODE)], fence=first.fence)
        store.leases.take(EPISODE, "resume", take_over=True)
        with pytest.raises(LeaseLost) as e:
            store.append([started(EPISODE, 2)], fence=first.fence, audit=[{"kind": "x"}])
        assert "resume" in str(e.value)  # it names who runs it now
        assert [ev.originator_version for ev in store.read(EPISODE)] == [1]
        assert list(store.audit.records()) == []


def test_a_fenced_append_that_conflicts_is_a_stream_conflict(store_url: str) -> None:
    with Store(store_url) as store:
        lease, _ = store.leases.take(EPISODE, "run")
        store.append([started(EPISODE)], fence=lease.fence)
        with pytest.raises(StreamConflict):
            store.append([started(EPISODE)], fence=lease.fence)


def test_in_a_grouped_transaction_a_stale_append_fails_alone(store_url: str) -> None:
    with Store(store_url) as store:
        stale, _ = store.leases.take(EPISODE, "run")
        current, _ = store.leases.take(EPISODE, "resume", take_over=True)
        other = uuid.UUID(int=9)
        # The first append holds its transaction open until two more have queued behind it,
        # so those two share the next transaction.
        queued = threading.Event()
        recorder = store.recorder
        first_commit = [True]

        def before_commit() -> None:
            if first_commit and first_commit.pop():
                while recorder.group.queued < 2:
                    queued.wait(0.01)

        recorder.before_commit = before_commit  # type: ignore[method-assign]
        results: dict[str, Any] = {}

        def append(name: str, events: list[Any], fence: Fence | None) -> None:
            try:
                results[name] = store.append(events, fence=fence)
            except LeaseLost as e:
                results[name] = e

        lead = threading.Thread(target=append, args=("lead", [started(other)], None))
        lead.start()
        while recorder.group.transactions < 1:
            queued.wait(0.01)
        threads = [
            threading.Thread(target=append, args=("stale", [started(EPISODE)], stale.fence)),
            threading.Thread(target=append, args=("current", [started(EPISODE)], current.fence)),
        ]
        for t in threads:
            t.start()
        for t in [lead, *threads]:
            t.join()
        assert recorder.group.transactions == 2  # the stale and the current shared one
        assert isinstance(results["stale"], LeaseLost)
        assert isinstance(results["current"], list) and len(results["current"]) == 1
        assert len(store.read(EPISODE)) == 1 and len(store.read(other)) == 1


# --- two runners of one episode ---------------------------------------------------------


class Payment(BaseModel):
    to: str
    amount: Decimal


paid: list[str] = []
paying = threading.Event()
go_on = threading.Event()


@tool(destructive=True)
def slow_pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay, slowly: it waits for the test to let it finish."""
    paid.append(ctx.idempotency_key)
    paying.set()
    assert go_on.wait(60)
    return {"to": args.to, "status": "paid"}


TOPOLOGY = Topology(
    "slow",
    Supervisor(
        "root",
        (
            Agent(
                "clerk",
                Role("clerk", (Grant("slow_pay", tier="low"),)),
                ScriptedModel([call("slow_pay", to="ada@example.com", amount="120"), say("paid")]),
                (slow_pay,),
            ),
        ),
    ),
)


@pytest.fixture
def world() -> Iterator[None]:
    paid.clear()
    paying.clear()
    go_on.clear()
    yield
    go_on.set()


def supervisor(store: Store, start: int = 1, **how: Any) -> RootSupervisor:
    clock, ids = StepClock(), SequentialIds(start=start)
    host = LocalHost(Host(TOPOLOGY, store, clock, ids))
    return RootSupervisor(TOPOLOGY, store, host, clock, ids, **how)


class FirstRunner(threading.Thread):
    """The first runner: starts the episode in the background; ``outcome`` is its report,
    or the LeaseLost it ended with."""

    def __init__(self, store: Store, **how: Any) -> None:
        super().__init__()
        self.runner = supervisor(store, **how)
        self.outcome: EpisodeReport | LeaseLost | None = None
        self.start()
        assert paying.wait(60)  # it is inside the payment

    def run(self) -> None:
        try:
            self.outcome = self.runner.start({"ticket": "refund 1042"})
        except LeaseLost as e:
            self.outcome = e

    def finish(self) -> EpisodeReport | LeaseLost | None:
        go_on.set()
        self.join()
        return self.outcome


def test_a_second_runner_runs_nothing_while_the_first_pays(store_url: str, world: None) -> None:
    with Store(store_url) as store:
        first = FirstRunner(store)
        with pytest.raises(EpisodeLeased, match="is being run by pid"):
            supervisor(store, 100).resume(EPISODE)
        report = first.finish()
        assert isinstance(report, EpisodeReport) and report.status == "completed"
        assert paid == [f"{EPISODE}/clerk/1"]  # once
        # The refused resume left no trace.
        assert not any(isinstance(e, EpisodeResumed) for e in store.read(EPISODE))


def test_the_lease_is_renewed_while_a_long_tool_call_runs(store_url: str, world: None) -> None:
    with Store(store_url) as store:
        first = FirstRunner(store, lease_ttl_s=1.0)
        taken = store.leases.current(EPISODE)
        assert taken is not None
        # Wait (on the wall clock the lease runs against) until the lease as first taken
        # has expired: the runner renewed it meanwhile, so it still holds the episode.
        while store.leases.now() <= taken.expires + 0.5:
            paying.wait(0.05)
        renewed = store.leases.current(EPISODE)
        assert renewed is not None and renewed.expires > taken.expires
        assert renewed.token == taken.token
        with pytest.raises(EpisodeLeased):
            supervisor(store, 100).resume(EPISODE)
        report = first.finish()
        assert isinstance(report, EpisodeReport) and report.status == "completed"
        assert paid == [f"{EPISODE}/clerk/1"]


def test_a_forced_take_over_fences_the_first_runner_out(store_url: str, world: None) -> None:
    with Store(store_url) as store:
        first = FirstRunner(store)
        # An operator forces a second runner in while the first is inside the payment: it
        # cannot know whether the payment happened, so it asks a person instead of paying.
        second = supervisor(store, 100).resume(EPISODE, take_over=True)
        assert second.status == "waiting"
        # The first runner's payment returned, but it could record nothing more.
        assert isinstance(first.finish(), LeaseLost)
        assert paid == [f"{EPISODE}/clerk/1"]
        clerk = store.read(agent_stream_id(EPISODE, "clerk"))
        assert not any(isinstance(e, ActionExecuted) for e in clerk)
        assert any(isinstance(e, EffectUncertain) for e in clerk)
        [taken] = [e for e in store.read(EPISODE) if isinstance(e, EpisodeTakenOver)]
        assert taken.why == "taken over by force (--take-over)"
        assert (taken.token, taken.previous["token"]) == (2, 1)
        # Re-execution stops where the first runner's attempt did, and needs no runner.
        from tether.runtime.reexecute import reexecute

        done = reexecute(store, EPISODE, TOPOLOGY)
        assert done.identical, done.divergence
        # And the take-over is in the signed audit trail.
        assert any(
            r.fields.get("kind") == "lease" and r.fields.get("decision") == "taken_over"
            for r in store.audit.records()
        )
        # The trail accounts for every decision event, the take-over and the uncertain
        # effect among them; the fenced runner wrote neither events nor records.
        key = AuditKey.load(store.audit_key_path)
        assert verify_trail(store, {key.id: key.public}).intact


def test_cancel_ends_a_running_episode_and_its_runner_records_nothing_more(
    store_url: str, world: None
) -> None:
    from tether.runtime.launch import cancel

    with Store(store_url) as store:
        first = FirstRunner(store)
        done = cancel(EPISODE, by="alice", reason="wrong customer", db=store_url)
        assert done.was == "running"
        lost = first.finish()
        assert isinstance(lost, LeaseLost)
        assert "tether cancel by alice" in str(lost)
        assert paid == [f"{EPISODE}/clerk/1"]
        events = store.read(EPISODE)
        assert isinstance(events[-1], EpisodeCancelled) and events[-1].reason == "wrong customer"
        # Nobody holds it now, and nothing can run it again.
        lease = store.leases.current(EPISODE)
        assert lease is not None and lease.released
        assert supervisor(store, 100).resume(EPISODE).status == "cancelled"


# --- the reproduction, from the command line -------------------------------------------

SLOW_FILE = """
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.topologies import Agent, Grant, Role, Supervisor, Topology


class Payment(BaseModel):
    to: str
    amount: Decimal


@tool(destructive=True)
def slow_pay(args: Payment, ctx: ToolContext) -> dict:
    '''Pay, slowly: wait until the test says go.'''
    world = Path(ctx.context["world"])
    with world.open("a") as f:
        f.write(ctx.idempotency_key + "\\n")
    go = Path(ctx.context["go"])
    import time
    while not go.exists():
        time.sleep(0.05)
    return {"to": args.to, "status": "paid"}


topology = Topology(
    "slow",
    Supervisor(
        "root",
        (
            Agent(
                "clerk",
                Role("clerk", (Grant("slow_pay", tier="low"),)),
                ScriptedModel([call("slow_pay", to="ada@example.com", amount="120"), say("paid")]),
                (slow_pay,),
            ),
        ),
    ),
)
"""


@pytest.mark.ray
def test_tether_resume_during_a_run_says_who_runs_it_and_pays_nothing(
    ray_session: None, store_url: str, tmp_path: Path
) -> None:
    import ray

    from tether.memory import list_episodes

    world, go = tmp_path / "world.txt", tmp_path / "go"
    fleet = tmp_path / "slow.py"
    fleet.write_text(SLOW_FILE + f"\ncontext = {{'world': {str(world)!r}, 'go': {str(go)!r}}}\n")
    tether = str(Path(sys.executable).parent / "tether")
    address = ray.get_runtime_context().gcs_address
    run = subprocess.Popen(
        [tether, "run", str(fleet), "--db", store_url, "--address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the first runner is inside the payment.
        for _ in range(1200):
            if world.exists() and world.read_text():
                break
            assert run.poll() is None, run.communicate()
            threading.Event().wait(0.05)
        with Store(store_url) as store:
            [summary] = list_episodes(store)
        second = subprocess.run(
            [tether, "resume", str(summary.episode_id), "--db", store_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        # One line, naming who runs it and what to do; no traceback.
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"episode {summary.episode_id} is being run by pid {run.pid}" in lines[0]
        assert "--take-over" in lines[0]
        go.write_text("go")
        out, errors = run.communicate(timeout=120)
        assert run.returncode == 0, errors
        assert "slow: completed" in out
    finally:
        go.write_text("go")
        if run.poll() is None:
            run.kill()
    assert world.read_text().splitlines() == [f"{summary.episode_id}/clerk/1"]  # paid once
