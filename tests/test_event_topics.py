"""Stored events name their class by topic; splitting the catalogue into modules must not
change one, or a store written before could not be read."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from eventsourcing.utils import get_topic, resolve_topic

import tether.memory.events as events
from tether.memory._codec import new_mapper
from tether.memory.events import BoundariesChecked, Event, StageEvent


def catalogue() -> dict[str, type[Event]]:
    found = {name: getattr(events, name) for name in events.__all__}
    return {n: c for n, c in found.items() if isinstance(c, type) and issubclass(c, Event)}


def test_every_event_keeps_the_topic_it_was_stored_under() -> None:
    # Each class lives in a family module now; its topic still names the one catalogue.
    classes = catalogue()
    assert len(classes) > 50
    for name, cls in classes.items():
        if cls is Event:
            continue
        assert get_topic(cls) == f"tether.memory.events:{name}"
        assert resolve_topic(f"tether.memory.events:{name}") is cls


def test_an_event_stored_under_the_old_topic_reads_back() -> None:
    # A row written by the one-module catalogue comes back as the same event.
    mapper = new_mapper()
    event = BoundariesChecked(
        originator_id=uuid.uuid4(),
        originator_version=3,
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        action=1,
        decision="pass",
        reason="within the rails",
    )
    stored = mapper.to_stored_event(event)
    assert stored.topic == "tether.memory.events:BoundariesChecked"
    assert mapper.to_domain_event(stored) == event


def test_an_event_defined_elsewhere_gets_its_own_topic() -> None:
    # A stage event a user writes is not mistaken for one of tether's (nor its parent).
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class HoursChecked(StageEvent):
        stage = "hours"

    assert get_topic(HoursChecked) == f"{__name__}:{HoursChecked.__qualname__}"


def test_a_new_event_of_the_catalogue_is_found_without_a_reexport() -> None:
    # Adding a stage to tether is its event in a family module, its stage module and its
    # place in the list: the package need not learn its name for stored rows to decode.
    probe = dataclasses.make_dataclass(
        "ProbeChecked",
        [],
        bases=(StageEvent,),
        frozen=True,
        kw_only=True,
        namespace={"__module__": "tether.memory.events.gate", "stage": "probe"},
    )
    # (Resolved first: writing an event would make the topic known to this process.)
    assert resolve_topic("tether.memory.events:ProbeChecked") is probe
    assert get_topic(probe) == "tether.memory.events:ProbeChecked"
