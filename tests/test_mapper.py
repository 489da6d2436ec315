"""tether's mapper writes and reads exactly what eventsourcing's own mapper does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.memory import SequentialIds, StepClock, Store
from tether.memory.episodes import episode_events
from tether.memory.events import TaskAssigned
from tether.memory.store import new_event, new_mapper
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo


def assigned(task: dict[str, Any], at: datetime = datetime(2026, 5, 1, 12, tzinfo=UTC)) -> Any:
    """A TaskAssigned event carrying ``task``."""
    stream = uuid.uuid4()
    return new_event(
        TaskAssigned, stream, 1, at, episode_id=stream, agent="a", by="operator", task=task
    )


def test_every_event_of_the_demo_maps_as_eventsourcing_maps_it(sqlite_url: str) -> None:
    fast = new_mapper()
    plain = Mapper(transcoder=fast.transcoder)
    clock, ids = StepClock(), SequentialIds()
    with Store(sqlite_url) as store:
        supervisor = RootSupervisor(
            demo.topology, store, LocalHost(Host(demo.topology, store, clock, ids)), clock, ids
        )
        episode = supervisor.start(demo.task, demo.context).episode_id
        [item] = Inbox(store, clock).items("pending")
        Inbox(store, clock).approve(item.id, "alice", "ok")
        supervisor.resume(episode)
        events = [e for _, e in episode_events(store, episode)]
    assert len(events) > 50
    rows = []
    for n, event in enumerate(events):
        stored = fast.to_stored_event(event)
        assert stored == plain.to_stored_event(event)
        assert fast.to_domain_event(stored) == plain.to_domain_event(stored) == event
        rows.append(
            (n, str(stored.originator_id), event.originator_version, stored.topic, stored.state)
        )
    # The replay's route, twice: streams seen first, and streams already known.
    for _ in range(2):
        assert fast.from_rows(rows) == list(enumerate(events))


def test_nested_transcoded_values_take_eventsourcings_path() -> None:
    # A Decimal and a UUID inside the task, and a string that looks like a marker.
    fast = new_mapper()
    plain = Mapper(transcoder=fast.transcoder)
    event = assigned(
        {
            "amount": Decimal("9.99"),
            "ref": uuid.uuid4(),
            "note": "_type_",
            "text": 'say "_type_" and ü',
        }
    )
    stored = fast.to_stored_event(event)
    assert stored == plain.to_stored_event(event)
    back = fast.to_domain_event(stored)
    assert back == event and back.task["amount"] == Decimal("9.99")


@pytest.mark.parametrize(
    "task",
    [
        {"note": '"_type_"'},  # the marker's name inside a string: no marker
        {"ref": uuid.UUID(int=7)},  # a real marker beside ``at``
        {"x": float("nan")},  # JSON that orjson refuses and the json module reads
        {"deep": [{"at": {"_type_": "decimal_str", "_data_": "1.5"}}]},
    ],
)
def test_the_replay_route_reads_what_eventsourcing_reads(task: dict[str, object]) -> None:
    fast = new_mapper()
    plain = Mapper(transcoder=fast.transcoder)
    event = assigned(task)
    stored = fast.to_stored_event(event)
    [(_, back)] = fast.from_rows([(1, str(event.originator_id), 1, stored.topic, stored.state)])
    expected = plain.to_domain_event(stored)
    assert repr(back) == repr(expected)  # repr: NaN is not equal to itself
    assert type(back.task) is dict


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=1e-9, max_value=1e-3)  # where exponents begin, both sides
    | st.floats(min_value=1e15, max_value=1e17)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(task=st.dictionaries(st.text(), _json, max_size=4), reason=_json)
def test_any_json_is_written_byte_for_byte_as_eventsourcing_writes_it(
    task: dict[str, Any], reason: Any
) -> None:
    # Whichever route an event takes (orjson, or the json module for what orjson would
    # write differently: big integers, NaN, exponents), the bytes are eventsourcing's.
    fast = new_mapper()
    plain = Mapper(transcoder=fast.transcoder)
    event = assigned({**task, "r": reason}, datetime(2026, 5, 1, 12, 0, 0, 1, tzinfo=UTC))
    assert fast.to_stored_event(event) == plain.to_stored_event(event)
