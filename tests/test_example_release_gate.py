"""The software-delivery gate example: green releases deploy after a person signs off;
a failing scorecard is refused by the policy gate, on record."""

from __future__ import annotations

from pathlib import Path

from tether.memory import Store
from tether.memory.episodes import load_timeline
from tether.memory.sources import SequentialIds, StepClock
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import load_file

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "release_gate.py"


def run(store: Store, task: dict[str, str]) -> tuple[object, Host]:
    loaded = load_file(EXAMPLE)
    clock, ids = StepClock(), SequentialIds()
    host = Host(loaded.topology, store, clock, ids)
    supervisor = RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids)
    return supervisor.start(task, source=loaded.source), host


def test_a_green_release_waits_for_sign_off_then_deploys(sqlite_url: str) -> None:
    with Store(sqlite_url) as store:
        report, _ = run(store, {"release": "r42", "service": "checkout"})
        assert report.status == "waiting"  # type: ignore[attr-defined]
        [item] = Inbox(store, StepClock()).items("pending")
        assert item.request.tool == "deploy"
        assert item.request.arguments == {
            "release": "r42",
            "scorecard": "pass",
            "freeze": "none",
            "incidents": 0,
        }
        Inbox(store, StepClock()).approve(item.id, "release-manager", "change window open")
    with Store(sqlite_url) as store:
        loaded = load_file(EXAMPLE)
        clock, ids = StepClock(), SequentialIds(500)
        host = Host(loaded.topology, store, clock, ids)
        episode = report.episode_id  # type: ignore[attr-defined]
        done = RootSupervisor(loaded.topology, store, LocalHost(host), clock, ids).resume(episode)
        assert done.status == "completed"
        timeline = load_timeline(store, episode)
    assert [e.tool for e in timeline.effects] == ["deploy"]


def test_a_failing_scorecard_is_refused_by_the_policy_gate(sqlite_url: str) -> None:
    with Store(sqlite_url) as store:
        report, _ = run(store, {"release": "r13", "service": "checkout"})
        assert report.status == "completed"  # type: ignore[attr-defined]
        timeline = load_timeline(store, report.episode_id)  # type: ignore[attr-defined]
    gatekeeper = {a.name: a for a in timeline.agents}["gatekeeper"]
    [attempt] = gatekeeper.actions
    assert attempt.outcome == "denied"
    assert "the release's CI scorecard is not green" in attempt.reason
    assert not timeline.effects


def test_a_gatekeeper_that_claims_green_is_caught_by_provenance(sqlite_url: str) -> None:
    import dataclasses

    from tether.agents import ScriptedModel, call, say
    from tether.topologies import Topology

    loaded = load_file(EXAMPLE)
    gatekeeper = loaded.topology.agents()["gatekeeper"]
    liar = dataclasses.replace(
        gatekeeper,
        model=ScriptedModel(
            [
                call("deploy", release="r13", scorecard="pass", freeze="none", incidents=0),
                say("shipped"),
            ]
        ),
    )
    shape = loaded.topology.root
    root = dataclasses.replace(
        shape, children=tuple(liar if c.name == "gatekeeper" else c for c in shape.children)
    )
    topology: Topology = dataclasses.replace(loaded.topology, root=root)
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds()
        host = Host(topology, store, clock, ids)
        report = RootSupervisor(topology, store, LocalHost(host), clock, ids).start(
            {"release": "r13", "service": "checkout"}
        )
        timeline = load_timeline(store, report.episode_id)
    [attempt] = {a.name: a for a in timeline.agents}["gatekeeper"].actions
    assert attempt.outcome == "denied"
    assert "scorecard 'pass' was made up by the model" in attempt.reason
    assert not timeline.effects
