"""tether's mapper writes and reads exactly what eventsourcing's own mapper does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from eventsourcing.persistence import Mapper

from tether.memory import SequentialIds, StepClock, Store
from tether.memory.episodes import episode_events
from tether.memory.events import TaskAssigned
from tether.memory.store import new_event, new_mapper
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.supervisor import LocalHost, RootSupervisor
from tether.topologies import demo


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
    for event in events:
        stored = fast.to_stored_event(event)
        assert stored == plain.to_stored_event(event)
        assert fast.to_domain_event(stored) == plain.to_domain_event(stored) == event


def test_nested_transcoded_values_take_eventsourcings_path() -> None:
    # A Decimal and a UUID inside the task, and a string that looks like a marker.
    fast = new_mapper()
    plain = Mapper(transcoder=fast.transcoder)
    stream = uuid.uuid4()
    event = new_event(
        TaskAssigned,
        stream,
        1,
        datetime(2026, 5, 1, 12, tzinfo=UTC),
        episode_id=stream,
        agent="a",
        by="operator",
        task={
            "amount": Decimal("9.99"),
            "ref": uuid.uuid4(),
            "note": "_type_",
            "text": 'say "_type_" and ü',
        },
    )
    stored = fast.to_stored_event(event)
    assert stored == plain.to_stored_event(event)
    back = fast.to_domain_event(stored)
    assert back == event and back.task["amount"] == Decimal("9.99")
