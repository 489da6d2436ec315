"""The store's conformance suite, written once and run on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tether.memory import Journal, StepClock, Store, resolve_url
from tether.memory.events import (
    ApprovalGranted,
    ApprovalRequested,
    EffectApplied,
    TaskAssigned,
    effect_stream_id,
)
from tether.memory.store import new_event
from tether.runtime.errors import StoreCorrupt, StoreUnavailable, StoreUrlError, StreamConflict

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _task(stream: uuid.UUID, version: int, agent: str = "a") -> TaskAssigned:
    return new_event(
        TaskAssigned,
        stream,
        version,
        AT,
        episode_id=stream,
        agent=agent,
        task={"n": version, "amount": Decimal("1.50")},
        by="operator",
    )


class StoreConformance:
    """What every backend must do. Subclasses provide the ``url`` fixture."""

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        with Store(url) as store:
            yield store

    def test_events_come_back_as_they_went_in(self, store: Store) -> None:
        # An agent's task, with a Decimal and a nested dict, survives the round trip.
        stream = uuid.uuid4()
        store.append([_task(stream, 1), _task(stream, 2)])
        back = store.read(stream)
        assert [e.originator_version for e in back] == [1, 2]
        assert back[0] == _task(stream, 1)
        assert isinstance(back[0], TaskAssigned)
        assert back[0].task["amount"] == Decimal("1.50")
        assert store.read(stream, after=1) == [_task(stream, 2)]

    def test_a_conflicting_append_writes_nothing(self, store: Store) -> None:
        # Two streams in one append; one position is taken, so neither stream changes.
        a, b = uuid.uuid4(), uuid.uuid4()
        store.append([_task(a, 1)])
        with pytest.raises(StreamConflict) as caught:
            store.append([_task(b, 1), _task(a, 1)])
        assert str(a) in caught.value.stream_ids
        assert store.read(b) == []
        assert len(store.read(a)) == 1

    def test_notification_ids_give_one_global_order(self, store: Store) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        first = store.append([_task(a, 1), _task(b, 1)])
        second = store.append([_task(a, 2)])
        assert first[0] < first[1] < second[0]
        merged = store.read_streams([b, a])
        assert [(e.originator_id, e.originator_version) for _, e in merged] == [
            (a, 1),
            (b, 1),
            (a, 2),
        ]

    def test_events_can_be_found_by_type_across_streams(self, store: Store) -> None:
        approval = uuid.uuid4()
        store.append(
            [
                _task(uuid.uuid4(), 1),
                new_event(
                    ApprovalRequested,
                    approval,
                    1,
                    AT,
                    episode_id=approval,
                    agent="a",
                    action=1,
                    tool="t",
                    arguments={},
                    tier="high",
                    rules=["r"],
                    reason="why",
                ),
            ]
        )
        store.append([new_event(ApprovalGranted, approval, 2, AT, approver="p", reason="ok")])
        found = store.of_type(ApprovalRequested, ApprovalGranted)
        assert [type(e).__name__ for _, e in found] == ["ApprovalRequested", "ApprovalGranted"]

    def test_an_effect_key_is_recorded_once(self, store: Store) -> None:
        # The effects ledger: a second record of the same idempotency key conflicts.
        key = "ep/agent/3"

        def effect() -> EffectApplied:
            return new_event(
                EffectApplied,
                effect_stream_id(key),
                1,
                AT,
                key=key,
                episode_id=uuid.uuid4(),
                agent="a",
                action=3,
                tool="pay",
                arguments={},
                result={"ok": True},
            )

        store.append([effect()])
        with pytest.raises(StreamConflict):
            store.append([effect()])
        assert len(store.read(effect_stream_id(key))) == 1

    def test_a_corrupt_record_names_its_stream_and_position(self, store: Store) -> None:
        # Someone scribbles over one stored event; the others stay readable.
        bad, good = uuid.uuid4(), uuid.uuid4()
        store.append([_task(bad, 1), _task(bad, 2), _task(good, 1)])
        table = store.recorder.table
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(
                    table.c.originator_id == str(bad),
                    table.c.originator_version == 2,
                )
                .values(state=b"\xff not json")
            )
        with pytest.raises(StoreCorrupt) as caught:
            store.read(bad)
        assert caught.value.stream_id == str(bad)
        assert caught.value.position == 2
        assert store.read(good) == [_task(good, 1)]

    def test_the_journal_numbers_and_holds_until_flushed(self, store: Store) -> None:
        stream = uuid.uuid4()
        seen: list[object] = []
        journal = Journal(store, stream, StepClock())
        journal.observers.append(seen.append)
        journal.record(TaskAssigned, episode_id=stream, agent="a", task={}, by="operator")
        journal.record(TaskAssigned, episode_id=stream, agent="a", task={}, by="operator")
        assert store.read(stream) == []  # held, not yet written
        journal.flush()
        assert [e.originator_version for e in store.read(stream)] == [1, 2]
        assert len(seen) == 2

    def test_a_failed_flush_keeps_the_events(self, store: Store) -> None:
        # Another writer took position 1; the journal's events are not silently lost.
        stream = uuid.uuid4()
        store.append([_task(stream, 1)])
        journal = Journal(store, stream, StepClock())
        journal.record(TaskAssigned, episode_id=stream, agent="a", task={}, by="operator")
        with pytest.raises(StreamConflict):
            journal.flush()
        assert len(journal.pending) == 1


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url


# --- URLs -----------------------------------------------------------------------------


def test_a_relative_sqlite_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray workers may start elsewhere; they must open the driver's file.
    monkeypatch.chdir(tmp_path)
    assert resolve_url("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"


def test_tether_db_is_the_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_DB", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_url(None).endswith("env.db")
    monkeypatch.delenv("TETHER_DB")
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == f"sqlite:///{tmp_path / '.tether' / 'tether.db'}"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "not a URL"),
        ("mysql://root@localhost/test", "unsupported backend 'mysql'"),
        ("sqlite://", "in-memory"),
    ],
)
def test_an_unusable_url_says_why(url: str, words: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        Store(url)
    assert words in str(caught.value)
    assert "--db" in str(caught.value)


def test_an_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        Store("postgresql://postgres@127.0.0.1:1/test")
    assert "127.0.0.1:1" in str(caught.value)
