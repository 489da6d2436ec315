"""Erasure of a data subject by crypto-shredding: afterwards no byte of her plaintext is
left in the database, and the episode still replays, its personal fields shown as erased."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory import episodes as episodes_module
from tether.memory._keys import ERASED
from tether.memory.episodes import episode_events
from tether.memory.events import (
    ActionProposed,
    FieldRedacted,
    SubjectErased,
    agent_stream_id,
    erasure_stream_id,
)
from tether.memory.org import OrgMemory
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo

EMAIL = b"ada@example.com"


def refund_desk(store: Store) -> object:
    """The demo, about customer:ada, approved and finished; then replayed and queried, so
    snapshots and the facts read model hold what was derived from her data."""
    clock, ids = StepClock(), SequentialIds()

    def supervisor() -> RootSupervisor:
        host = Host(demo.topology, store, clock, ids)
        return RootSupervisor(demo.topology, store, LocalHost(host), clock, ids)

    episode = supervisor().start(demo.task, demo.context, subject=demo.subject).episode_id
    [item] = Inbox(store, clock).items("pending")
    Inbox(store, clock).approve(item.id, "alice", "order checked")
    assert supervisor().resume(episode).status == "completed"
    load_timeline(store, episode)  # leaves a snapshot (SNAPSHOT_EVERY is lowered below)
    assert OrgMemory(store).about("customer:ada")
    return episode


@pytest.fixture
def store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(episodes_module, "SNAPSHOT_EVERY", 5)
    with Store(sqlite_url) as s:
        yield s


def raw_bytes(url: str) -> bytes:
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_personal_data_never_reaches_the_event_log_in_plaintext(store: Store) -> None:
    refund_desk(store)
    t = store.recorder.table
    with store.engine.connect() as conn:
        states = [bytes(s) for (s,) in conn.execute(sa.select(t.c.state))]
    assert not any(EMAIL in s for s in states)
    assert sum(b'"_type_":"sealed"' in s for s in states) > 20
    # Derived data (a snapshot of the replay) does hold plaintext until she is erased.
    assert EMAIL in raw_bytes(store.url)


def test_after_erasure_no_byte_of_her_plaintext_remains(store: Store, sqlite_url: str) -> None:
    episode = refund_desk(store)
    result = CliRunner().invoke(
        app,
        ["forget", "customer:ada", "--reason", "GDPR art. 17", "--as", "dpo", "--db", sqlite_url],
    )
    assert result.exit_code == 0, result.output
    assert "erased customer:ada: key destroyed" in result.output
    # Scan the raw files: the database, its WAL and shared memory.
    raw = raw_bytes(sqlite_url)
    assert EMAIL not in raw and b"Ada informed" not in raw
    # The episode still replays; what was hers reads as erased, the structure stays.
    with Store(sqlite_url) as store2:
        timeline = load_timeline(store2, episode)  # type: ignore[arg-type]
        refunds = {a.name: a for a in timeline.agents}["refunds"]
        assert [a.tool for a in refunds.actions][:3] == [
            "lookup_order",
            "issue_refund",
            "issue_refund",
        ]
        assert refunds.actions[1].arguments == {"erased": "customer:ada"}
        assert [s.stage for s in refunds.actions[2].stages][:3] == [
            "boundaries",
            "budget",
            "governance",
        ]
        assert refunds.actions[2].outcome == "executed"
        assert timeline.output == ERASED
        # Snapshots and the read model were rebuilt from what is left.
        facts = OrgMemory(store2).about("customer:ada")
        assert [f.statement for f in facts] == [ERASED]
        [receipt] = store2.read(erasure_stream_id("customer:ada"))
        assert isinstance(receipt, SubjectErased)
        assert (receipt.requested_by, receipt.reason) == ("dpo", "GDPR art. 17")
        assert receipt.sealed_events > 20 and receipt.facts == 1
        assert any(
            e.__class__.__name__ == "EffectApplied" for _, e in episode_events(store2, episode)
        )  # type: ignore[arg-type]
    # And the replay command prints it.
    shown = CliRunner().invoke(app, ["replay", str(episode), "--db", sqlite_url])
    assert shown.exit_code == 0 and ERASED in shown.output
    dumped = CliRunner().invoke(app, ["replay", str(episode), "--json", "--db", sqlite_url])
    assert "ada@example.com" not in dumped.output and json.loads(dumped.output)
    # The audit trail held no personal data to begin with, and still verifies.
    audited = CliRunner().invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert audited.exit_code == 0, audited.output
    assert "audit trail intact" in audited.output


def test_forgetting_someone_tether_never_knew_is_one_clear_error(sqlite_url: str) -> None:
    Store(sqlite_url).close()  # a store, with nothing about anyone in it
    result = CliRunner().invoke(app, ["forget", "customer:nobody", "--db", sqlite_url])
    assert result.exit_code == 1
    assert "no data about subject 'customer:nobody'" in result.output


@pytest.mark.postgres
def test_erasure_on_postgres_leaves_no_plaintext_in_any_table(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(episodes_module, "SNAPSHOT_EVERY", 5)
    with Store(postgres_url) as store:
        episode = refund_desk(store)
        result = CliRunner().invoke(app, ["forget", "customer:ada", "--db", postgres_url])
        assert result.exit_code == 0, result.output
        with store.engine.connect() as conn:
            tables = [
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            ]
            for table in tables:
                dump = conn.exec_driver_sql(f"SELECT CAST(t AS text) FROM {table} t").all()
                assert not any("ada@example.com" in row[0] for row in dump), table
        timeline = load_timeline(store, episode)  # type: ignore[arg-type]
        assert timeline.status == "completed"


def test_a_redacted_field_reads_as_redacted_everywhere_and_the_act_is_recorded(
    store: Store, sqlite_url: str
) -> None:
    episode = refund_desk(store)
    refunds = agent_stream_id(episode, "refunds")  # type: ignore[arg-type]
    [proposed] = [e for e in store.read(refunds) if isinstance(e, ActionProposed) and e.action == 3]
    step = f"event{proposed.originator_version}"
    result = CliRunner().invoke(
        app,
        [
            "redact",
            str(episode),
            "refunds",
            step,
            "arguments",
            "--reason",
            "card number pasted by mistake",
            "--as",
            "dpo",
            "--db",
            sqlite_url,
        ],
    )
    assert result.exit_code == 0, result.output
    with Store(sqlite_url) as s:
        timeline = load_timeline(s, episode)  # type: ignore[arg-type]
        action = {a.name: a for a in timeline.agents}["refunds"].actions[2]
        assert action.arguments == {"redacted": True}
        assert action.outcome == "executed"  # the rest of the story is intact
        events = episode_events(s, episode)  # type: ignore[arg-type]
        [again] = [
            e
            for _, e in events
            if isinstance(e, ActionProposed) and e.originator_id == refunds and e.action == 3
        ]
        assert again.arguments == {"redacted": True}
        [record] = [e for _, e in events if isinstance(e, FieldRedacted)]
        assert (record.agent, record.field, record.by) == ("refunds", "arguments", "dpo")
        # An agent rebuilt from its stream reads it redacted too.
        host = Host(demo.topology, s, StepClock(), SequentialIds(900))
        history = host.history(episode, "refunds")  # type: ignore[arg-type]
        [seen] = [e for e in history if isinstance(e, ActionProposed) and e.action == 3]
        assert seen.arguments == {"redacted": True}
    context = CliRunner().invoke(
        app, ["replay", str(episode), "--context", "refunds:turn3", "--db", sqlite_url]
    )
    assert context.exit_code == 0, context.output


@pytest.mark.parametrize(
    ("agent", "step", "field", "words"),
    [
        ("nobody", "event1", "task", "agent 'nobody' is not in episode"),
        ("refunds", "event999", "task", "event 999: refunds has no such place"),
        ("refunds", "event1", "at", "field 'at': event 1 is TaskAssigned, which has"),
    ],
)
def test_a_redaction_that_names_nothing_is_refused(
    store: Store, sqlite_url: str, agent: str, step: str, field: str, words: str
) -> None:
    episode = refund_desk(store)
    result = CliRunner().invoke(
        app, ["redact", str(episode), agent, step, field, "--db", sqlite_url]
    )
    assert result.exit_code == 1 and words in result.output


def test_an_erased_episode_replays_but_does_not_run_again(store: Store, sqlite_url: str) -> None:
    episode = refund_desk(store)
    assert CliRunner().invoke(app, ["forget", "customer:ada", "--db", sqlite_url]).exit_code == 0
    for args in (
        ["resume", str(episode)],
        ["fork", str(episode), "--at", "1"],
        ["replay", str(episode), "--reexecute"],
    ):
        result = CliRunner().invoke(app, [*args, "--db", sqlite_url])
        assert result.exit_code == 1, (args, result.output)
        assert "whose data was erased; it can be replayed" in result.output, args
    assert CliRunner().invoke(app, ["replay", str(episode), "--db", sqlite_url]).exit_code == 0
