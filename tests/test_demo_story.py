"""The refund desk's story in process (no Ray): every scripted turn is used, once."""

from __future__ import annotations

from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory.events import (
    ActionProposed,
    FactRecorded,
    agent_stream_id,
    subject_stream_id,
)
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo


def test_the_refund_desk_uses_its_whole_script(sqlite_url: str) -> None:
    clock, ids = StepClock(), SequentialIds()
    with Store(sqlite_url) as store:

        def supervisor() -> RootSupervisor:
            host = Host(demo.topology, store, clock, ids)
            return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)

        report = supervisor().start(demo.task, demo.context)
        assert report.status == "waiting"
        inbox = Inbox(store, clock)
        [item] = inbox.items("pending")
        inbox.approve(item.id, "alice", "order checked")
        report = supervisor().resume(report.episode_id)
        assert report.status == "completed"
        timeline = load_timeline(store, report.episode_id)
        # The fact about the customer is in org memory, citing the action that wrote it.
        [fact] = store.read(subject_stream_id("customer:ada"))
        assert isinstance(fact, FactRecorded) and fact.key == "refund:1042"
        [proposed] = [
            e
            for e in store.read(agent_stream_id(report.episode_id, "refunds"))
            if isinstance(e, ActionProposed) and e.action == 6
        ]
        assert fact.source == {
            "episode": str(report.episode_id),
            "agent": "refunds",
            "action": 6,
            "event": f"{proposed.originator_id}/{proposed.originator_version}",
        }

    demo.triage_model.assert_complete()
    demo.refunds_model.assert_complete()
    # Both injected actions were stopped; every legitimate one ran.
    outcomes = [
        (a.tool, a.arguments.get("recipient") or a.arguments.get("to"), a.outcome)
        for agent in timeline.agents
        for a in agent.actions
    ]
    assert ("issue_refund", "mallory@evil.test", "denied") in outcomes
    assert ("send_email", "mallory@evil.test", "denied") in outcomes
    assert ("issue_refund", "ada@example.com", "executed") in outcomes
    assert ("send_email", "ada@example.com", "executed") in outcomes
    assert [e.tool for e in timeline.effects] == ["issue_refund", "send_email", "record_fact"]
