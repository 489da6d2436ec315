"""Upcasting: an event whose shape changed reads its old records through ``upcast_vN_vM``
steps declared on its class, on every route the mapper has (eventsourcing's convention)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import orjson
import pytest
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic

from tether.memory import Store
from tether.memory._codec import new_mapper
from tether.memory.errors import StoreCorrupt
from tether.memory.events import Event
from tether.memory.store import new_event

AT = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class RefundIssued(Event):
    """Version 3. Version 1 had ``amount`` as a string and no currency; version 2 added
    ``currency``; version 3 made ``amount`` a Decimal."""

    class_version: ClassVar[int] = 3
    personal: ClassVar[tuple[str, ...]] = ("note",)

    amount: Decimal
    currency: str
    note: str = ""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["currency"] = "EUR"  # every refund before version 2 was in euros

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["amount"] = Decimal(state["amount"])


@dataclass(frozen=True, kw_only=True)
class Unfinished(Event):
    """A class at version 2 whose author forgot the upcaster."""

    class_version: ClassVar[int] = 2


def old_record(state: dict[str, Any], position: int = 1) -> StoredEvent:
    """A record of ``RefundIssued`` as an older tether wrote it."""
    stream = uuid.UUID(int=7)
    at = {"at": {"_type_": "datetime_iso", "_data_": AT.isoformat()}}
    return StoredEvent(stream, position, get_topic(RefundIssued), orjson.dumps(at | state))


def test_a_version_1_record_is_read_as_the_current_class() -> None:
    # Written before ``currency`` existed, with the amount as text.
    record = old_record({"amount": "120.00", "note": "broken machine"})
    event = new_mapper().to_domain_event(record)
    assert isinstance(event, RefundIssued)
    assert (event.amount, event.currency) == (Decimal("120.00"), "EUR")
    assert event.note == "broken machine"
    # eventsourcing's own mapper reads it the same way.
    plain = Mapper(transcoder=new_mapper().transcoder)
    assert plain.to_domain_event(record) == event


def test_a_version_2_record_takes_only_the_steps_after_it() -> None:
    record = old_record({"amount": "80", "currency": "CHF", "note": "", "class_version": 2})
    event = new_mapper().to_domain_event(record)
    assert (event.amount, event.currency) == (Decimal("80"), "CHF")


def test_a_current_event_is_written_with_its_version_as_eventsourcing_writes_it() -> None:
    fast = new_mapper()
    event = new_event(RefundIssued, uuid.UUID(int=7), 1, AT, amount=Decimal("5"), currency="EUR")
    stored = fast.to_stored_event(event)
    assert stored == Mapper(transcoder=fast.transcoder).to_stored_event(event)
    assert orjson.loads(stored.state)["class_version"] == 3
    assert fast.to_domain_event(stored) == event


def test_the_replay_route_upcasts_too() -> None:
    # ``from_rows`` builds most events straight from orjson's dict: old ones are upcast.
    mapper = new_mapper()
    old = old_record({"amount": "120.00", "note": ""})
    rows = [(1, str(old.originator_id), 1, old.topic, old.state)]
    # Twice: a stream seen for the first time takes the slow route, a known one the direct.
    for _ in range(2):
        [(_, event)] = mapper.from_rows(rows)
        assert isinstance(event, RefundIssued)
        assert (event.amount, event.currency) == (Decimal("120.00"), "EUR")


def test_old_records_in_a_store_are_read_upcast_and_stay_as_they_were(sqlite_url: str) -> None:
    # A database written by an older tether: its bytes are never rewritten.
    old = old_record({"amount": "120.00", "note": "broken machine"})
    with Store(sqlite_url) as store:
        store.recorder.insert_events([old])
        [event] = store.read(old.originator_id)
        assert isinstance(event, RefundIssued) and event.currency == "EUR"
        [(_, again)] = store.read_streams([old.originator_id])
        assert again == event
        [row] = store.recorder.select_events(old.originator_id)
        assert row.state == old.state


def test_a_record_from_a_newer_tether_is_refused_by_name(sqlite_url: str) -> None:
    newer = old_record({"amount": "1", "currency": "EUR", "note": "", "class_version": 4})
    with pytest.raises(MapperDeserialisationError, match="written by a newer tether"):
        new_mapper().to_domain_event(newer)
    with Store(sqlite_url) as store:
        store.recorder.insert_events([newer])
        with pytest.raises(StoreCorrupt, match="upgrade tether to read it"):
            store.read_streams([newer.originator_id])


def test_a_version_without_its_upcaster_is_named() -> None:
    event = new_event(Unfinished, uuid.UUID(int=8), 1, AT)
    with pytest.raises(TypeError, match="Unfinished is at class_version 2 but has no upcast_v1_v2"):
        new_mapper().to_stored_event(event)
