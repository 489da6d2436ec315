"""Committed histories: recorded episodes, kept as JSON under ``tests/fixtures/histories``,
re-executed with the current code on every run. A change that the recorded episodes would
not survive (a decision made otherwise, an event the current code cannot read) fails
here, as Temporal's replay tests fail a workflow change that breaks old histories.

Re-recording a history is deliberate: ``python -m tests.fixtures.record NAME``, after
reading ``docs/REPLAY-FIXTURES.md``.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents import ScriptedModel, call, say
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory._keys import ERASED
from tether.memory.episodes import episode_events
from tether.memory.errors import ConfigError, EpisodeErased
from tether.memory.events import mailbox_stream_id
from tether.memory.histories import export_episode, import_history, read_history
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.histories import recorded_topology, reexecute_history
from tether.runtime.host import Host
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import (
    Agent,
    ApprovalThreshold,
    Grant,
    Role,
    Supervisor,
    Topology,
    demo,
    load_file,
)

from .fixtures.record import HISTORIES, ROOT, SCENARIOS, audit_key, kinds
from .test_gate import ALL_TOOLS


def imported(tmp_path: Path, name: str) -> tuple[Store, Any]:
    """A fresh store holding the committed history ``name``, signed by the fixed key."""
    path = HISTORIES / f"{name}.json"
    store = Store(f"sqlite:///{tmp_path / 'history.db'}", audit_key=audit_key(tmp_path))
    return store, import_history(store, read_history(path), str(path))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_committed_history_reexecutes_identically_with_the_current_code(
    name: str, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    history = read_history(HISTORIES / f"{name}.json")
    assert set(scenario.features) <= set(kinds(history))  # it still covers what it was for
    store, episode = imported(tmp_path, name)
    with store:
        # The timeline still loads from the old events.
        timeline = load_timeline(store, episode)
        assert timeline.status == scenario.status
        # The audit trail came along whole: `tether audit verify` finds it intact, each
        # decision event with its record.
        verified = CliRunner().invoke(
            app,
            ["audit", "verify", "--db", store.url, "--audit-key", str(store.audit_key_path)],
        )
        assert verified.exit_code == 0, verified.output
        assert "audit trail intact" in verified.output
        # Exported again, it is the same file: nothing was lost or changed on the way in.
        assert export_episode(store, episode, note=scenario.note) == history
        if scenario.erased:
            # Her data is gone: the episode replays, but it cannot run again.
            assert timeline.output == ERASED
            with pytest.raises(EpisodeErased):
                reexecute(store, episode, demo.topology)
            return
        # Under the topology it was started from, as that topology is now.
        result = reexecute(store, episode, recorded_topology(store, episode, ROOT))
        assert result.identical, f"{name}: {result.divergence}"
        assert result.events_compared > 50
        assert result.fed_back["model_turns"] > 0


def test_every_committed_history_has_its_scenario() -> None:
    # A history nobody re-executes would protect nothing; a scenario without its file
    # was never recorded.
    assert sorted(p.stem for p in HISTORIES.glob("*.json")) == sorted(SCENARIOS)


def test_a_change_of_decision_is_reported_at_the_first_event_it_changes() -> None:
    # This build of the refund desk lets refunds up to 1000 through without a person:
    # the recorded refund of 120.00 waited for one.
    refunds = demo.topology.agents()["refunds"]
    grants = tuple(
        dataclasses.replace(g, approval=ApprovalThreshold(field="amount", above=Decimal("1000")))
        if g.tool == "issue_refund"
        else g
        for g in refunds.role.grants
    )
    lenient = demo.topology.with_agents(
        lambda a: (
            dataclasses.replace(a, role=dataclasses.replace(a.role, grants=grants))
            if a.name == "refunds"
            else a
        )
    )
    result = reexecute_history(HISTORIES / "refund_desk.json", topology=lenient)
    assert not result.identical
    d = result.divergence
    assert d is not None
    assert (d.agent, d.event, d.field) == ("refunds", "GovernanceDecided", "decision")
    assert (d.recorded, d.new) == ("approval", "allow")


def test_a_changed_verifier_in_the_example_is_reported() -> None:
    # Someone loosens the research fan-out's verifier: an answer without a source passes.
    loaded = load_file(ROOT / "examples" / "research_fanout.py")
    loose = loaded.topology.with_agents(
        lambda a: dataclasses.replace(a, verifiers=()) if a.name.startswith("researcher") else a
    )
    result = reexecute_history(HISTORIES / "research_fanout.json", topology=loose)
    assert not result.identical
    d = result.divergence
    assert d is not None
    assert (d.agent, d.event, d.field) == ("researcher-1", "AnswerRejected", "type")
    assert d.new == "AgentFinished"


def test_the_history_file_is_reexecuted_from_its_recorded_source() -> None:
    # What `reexecute_history` does by itself: import, load the topology as it is now.
    result = reexecute_history(HISTORIES / "research_fanout.json", root=ROOT)
    assert result.identical, result.divergence


@pytest.mark.postgres
def test_a_committed_history_reexecutes_from_postgres(postgres_url: str, tmp_path: Path) -> None:
    path = HISTORIES / "refund_desk.json"
    with Store(postgres_url, audit_key=audit_key(tmp_path)) as store:
        episode = import_history(store, read_history(path), str(path))
        assert load_timeline(store, episode).status == "completed"
        result = reexecute(store, episode, recorded_topology(store, episode))
        assert result.identical, result.divergence
        # And what PostgreSQL holds exports to the same file.
        assert export_episode(store, episode, note=SCENARIOS["refund_desk"].note) == read_history(
            path
        )


# --- export and import ------------------------------------------------------------------


def test_an_exported_episode_imports_to_the_same_events(tmp_path: Path) -> None:
    # Two agents about customer:ada: one sends the other a message, then hands off.
    def agent(name: str, script: list[Any], **kw: Any) -> Agent:
        grants = (Grant("noop", tier="low"),)
        return Agent(name, Role(name, grants), ScriptedModel(script), ALL_TOOLS, **kw)

    topology = Topology(
        "desk",
        Supervisor(
            "root",
            (
                agent(
                    "intake",
                    [
                        call("send_message", to="payer", body="ada@example.com paid twice"),
                        call("handoff", to="payer", reason="refund it"),
                    ],
                    peers=("payer",),
                    handoffs=("payer",),
                ),
                agent("payer", [call("noop"), say("refunded ada")]),
            ),
        ),
    )
    clock, ids = StepClock(), SequentialIds()
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        host = Host(topology, store, clock, ids)
        report = RootSupervisor(topology, store, LocalHost(host), clock, ids).start(
            {"do": "it"}, subject="customer:ada"
        )
        episode = report.episode_id
        history = export_episode(store, episode)
        before = [e for _, e in episode_events(store, episode)]
        mailbox = store.read(mailbox_stream_id(episode, "payer"))
    # The file holds no ciphertext of hers: her fields are opened, to be sealed again.
    text = json.dumps(history)
    assert '"open"' in text and '"c":' not in text
    with Store(f"sqlite:///{tmp_path / 'b.db'}") as fresh:
        assert import_history(fresh, history) == episode
        assert [e for _, e in episode_events(fresh, episode)] == before
        assert fresh.read(mailbox_stream_id(episode, "payer")) == mailbox and mailbox
        assert reexecute(fresh, episode, topology).identical
        # Sealed again under this store's key: no plaintext of hers in its event table.
        t = fresh.recorder.table
        with fresh.engine.connect() as conn:
            states = [bytes(s) for (s,) in conn.execute(t.select().with_only_columns(t.c.state))]
        assert not any(b"ada@example.com" in s for s in states)


def test_a_file_that_is_no_history_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"events": []}')
    with pytest.raises(ConfigError, match=r"notes.json: not a tether history"):
        read_history(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match=r"notes.json: not JSON"):
        read_history(path)
    with pytest.raises(ConfigError, match=r"missing.json: No such file"):
        read_history(tmp_path / "missing.json")
    history = read_history(HISTORIES / "refund_desk.json")
    broken = {**history, "events": [{"stream": "x", "position": 1, "topic": "t", "state": {}}]}
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        with pytest.raises(ConfigError, match=r"events\[0\] is not a recorded event"):
            import_history(store, broken, "broken.json")


def test_a_history_goes_only_into_a_fresh_store(tmp_path: Path) -> None:
    store, _ = imported(tmp_path, "refund_desk")
    with store, pytest.raises(ConfigError, match="already holds events"):
        import_history(store, read_history(HISTORIES / "refund_desk.json"))
