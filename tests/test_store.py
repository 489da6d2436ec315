"""The store's conformance suite, written once and run on every backend: SQLite,
PostgreSQL and the in-memory one."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tether.memory import Journal, StepClock, Store, resolve_url
from tether.memory.errors import (
    StoreCorrupt,
    StoreFormatError,
    StoreUnavailable,
    StoreUrlError,
    StreamConflict,
)
from tether.memory.events import (
    ApprovalGranted,
    ApprovalRequested,
    EffectApplied,
    Event,
    FactRecorded,
    TaskAssigned,
    effect_stream_id,
    subject_stream_id,
)
from tether.memory.store import new_event

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


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


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
        # A replay's bulk read names it too, also when the bytes look like a sound record
        # up to where they break off.
        with pytest.raises(StoreCorrupt) as caught:
            store.read_streams([good, bad])
        assert (caught.value.stream_id, caught.value.position) == (str(bad), 2)
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.originator_id == str(bad), table.c.originator_version == 2)
                .values(state=b'{"at":{"_type_":"datetime_iso","_data_":"2026-')
            )
        with pytest.raises(StoreCorrupt) as caught:
            store.read_streams([bad])
        assert (caught.value.stream_id, caught.value.position) == (str(bad), 2)

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

    # --- group commit and tail appends ---

    def test_appends_that_arrive_together_share_one_transaction(self, store: Store) -> None:
        # The first transaction is held open until nine more appenders are queued behind it.
        gate = threading.Event()
        held = [True]

        def hold() -> None:
            if held.pop() if held else False:
                gate.wait(30)

        store.recorder.before_commit = hold  # type: ignore[method-assign]
        streams = [uuid.uuid4() for _ in range(10)]
        threads = [
            threading.Thread(target=store.append, args=([_task(s, 1), _task(s, 2)],))
            for s in streams
        ]
        threads[0].start()
        _wait_for(lambda: not held, "the first transaction to start")
        for t in threads[1:]:
            t.start()
        _wait_for(lambda: store.recorder.group.queued == 9, "nine queued appends")
        before = store.recorder.group.transactions
        gate.set()
        for t in threads:
            t.join()
        assert store.recorder.group.transactions == before + 1  # the nine went in together
        assert all(len(store.read(s)) == 2 for s in streams)

    def test_a_conflict_in_a_group_fails_only_its_appender(self, store: Store) -> None:
        taken = uuid.uuid4()
        store.append([_task(taken, 1)])
        gate = threading.Event()
        held = [True]
        store.recorder.before_commit = (  # type: ignore[method-assign]
            lambda: gate.wait(30) if held and held.pop() else None
        )
        results: dict[str, object] = {}

        def append(name: str, events: list[Event]) -> None:
            try:
                results[name] = store.append(events)
            except StreamConflict as e:
                results[name] = e

        first = threading.Thread(target=append, args=("first", [_task(uuid.uuid4(), 1)]))
        first.start()
        _wait_for(lambda: not held, "the first transaction to start")
        fine, clash = uuid.uuid4(), [_task(taken, 1)]
        others = [
            threading.Thread(target=append, args=("fine", [_task(fine, 1)])),
            threading.Thread(target=append, args=("clash", clash)),
        ]
        for t in others:
            t.start()
        _wait_for(lambda: store.recorder.group.queued == 2, "two queued appends")
        gate.set()
        for t in [first, *others]:
            t.join()
        assert isinstance(results["clash"], StreamConflict)
        assert isinstance(results["fine"], list)
        assert len(store.read(fine)) == 1 and len(store.read(taken)) == 1

    def test_tail_appends_from_many_writers_never_conflict(self, store: Store) -> None:
        # Twenty agents record facts about one subject at once; each lands at the end.
        subject = subject_stream_id("customer:ada")

        def fact(i: int) -> FactRecorded:
            return new_event(
                FactRecorded,
                subject,
                0,
                AT,
                subject="customer:ada",
                key=f"k{i}",
                statement=f"fact {i}",
                source={},
            )

        threads = [
            threading.Thread(target=store.append, args=([],), kwargs={"tail": [fact(i)]})
            for i in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        facts = store.read(subject)
        assert [e.originator_version for e in facts] == list(range(1, 21))
        assert sorted(e.key for e in facts if isinstance(e, FactRecorded)) == sorted(
            f"k{i}" for i in range(20)
        )


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url


class TestInMemoryStore(StoreConformance):
    @pytest.fixture
    def url(self) -> str:
        return "memory://"


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
        ("memory://name/path", "named memory:// or memory://NAME"),
    ],
)
def test_an_unusable_url_says_why(url: str, words: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        Store(url)
    assert words in str(caught.value)
    assert "--db" in str(caught.value)


def test_a_store_of_another_shape_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE tether_events (id INTEGER PRIMARY KEY, "
            "originator_id TEXT, originator_version INT, topic TEXT, state BLOB)"
        )
    engine.dispose()
    with pytest.raises(StoreFormatError, match=r"missing columns \['catalog'\]"):
        Store(f"sqlite:///{path}")


def test_an_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        Store("postgresql://postgres@127.0.0.1:1/test")
    assert "127.0.0.1:1" in str(caught.value)


# --- crashes ---------------------------------------------------------------------------


CRASHER = """
import sys, threading, uuid, os
from datetime import UTC, datetime
from tether.memory import Store
from tether.memory.events import TaskAssigned
from tether.memory.store import new_event

store = Store(sys.argv[1])
def task(stream, v):
    return new_event(TaskAssigned, stream, v, datetime(2026, 1, 1, tzinfo=UTC),
                     episode_id=stream, agent="a", task={}, by="operator")
acked = uuid.uuid4()
store.append([task(acked, 1)])
print("acked", acked, flush=True)
# The next transaction dies just before COMMIT; another append waits behind it.
gate = threading.Event()
def die():
    gate.wait(30)
    os._exit(9)
store.recorder.before_commit = die
lost = [uuid.uuid4(), uuid.uuid4()]
for s in lost:
    print("unacked", s, flush=True)
    threading.Thread(target=store.append, args=([task(s, 1)],)).start()
while store.recorder.group.queued < 1:
    pass
gate.set()
threading.Event().wait(30)
"""


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_a_crash_mid_group_commit_loses_only_unacknowledged_appends(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(backend)
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 9, done.stderr
    said = [line.split() for line in done.stdout.splitlines()]
    acked = [uuid.UUID(s) for word, s in said if word == "acked"]
    unacked = [uuid.UUID(s) for word, s in said if word == "unacked"]
    assert len(acked) == 1 and len(unacked) == 2
    with Store(url) as store:
        assert len(store.read(acked[0])) == 1
        assert all(store.read(s) == [] for s in unacked)
        _ = store.append([_task(unacked[0], 1)])  # the store is usable after the crash
