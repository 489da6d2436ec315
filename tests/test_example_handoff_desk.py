"""The handoff desk example: a swarm passes one ticket along with reasons; every effect is
tied to the customer on record."""

from __future__ import annotations

from pathlib import Path

from tether.memory import Store
from tether.memory.episodes import load_timeline
from tether.memory.events import AgentHandedOff, agent_stream_id
from tether.memory.sources import SequentialIds, StepClock
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import load_file

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "handoff_desk.py"


def test_the_ticket_passes_with_reasons_and_both_problems_are_solved(sqlite_url: str) -> None:
    loaded = load_file(EXAMPLE)
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds()
        host = Host(loaded.topology, store, clock, ids)
        supervisor = RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids)
        report = supervisor.start(loaded.task or {}, loaded.context, loaded.source)
        assert report.status == "completed", report.output
        assert report.output == "credited 19.99 and sent a reset link"
        timeline = load_timeline(store, report.episode_id)
        handoffs = [
            (e.originator_id, e.to, e.reason)
            for name in ("triage", "billing")
            for e in store.read(agent_stream_id(report.episode_id, name))
            if isinstance(e, AgentHandedOff)
        ]
    assert [(to, reason) for _, to, reason in handoffs] == [
        ("billing", "a double charge; then a login problem"),
        ("tech", "the customer cannot log in"),
    ]
    assert [
        (e.tool, e.arguments.get("customer") or e.arguments.get("account"))
        for e in timeline.effects
    ] == [
        ("issue_credit", "cus_7"),
        ("reset_password", "cus_7"),
    ]
    assert timeline.count("denied") == 0
