"""Reading redacted history: which fields of which events a person redacted, and the
events as every reader sees them afterwards (the field replaced by a marker)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

from .events import Event, FieldRedacted

REDACTED = "[redacted]"
"""What a redacted text field reads as."""


def fields_of(event: Event) -> list[str]:
    return [f.name for f in dataclasses.fields(event)]


def redactions(events: Iterable[Event]) -> dict[tuple[str, int], list[str]]:
    """(agent, position) → redacted fields, from an episode's own stream."""
    out: dict[tuple[str, int], list[str]] = {}
    for e in events:
        if isinstance(e, FieldRedacted):
            out.setdefault((e.agent, e.position), []).append(e.field)
    return out


def redacted(event: Event, fields: list[str]) -> Event:
    """The event with the given fields replaced by a marker of the same kind."""
    changes: dict[str, Any] = {}
    for name in fields:
        value = getattr(event, name)
        changes[name] = (
            {"redacted": True}
            if isinstance(value, dict)
            else [REDACTED]
            if isinstance(value, list)
            else REDACTED
        )
    return dataclasses.replace(event, **changes)


def without_redacted(
    events: list[tuple[int, Event]], names: dict[uuid.UUID, str]
) -> list[tuple[int, Event]]:
    """Events with every redacted field (``FieldRedacted`` in the episode's own stream)
    replaced by its marker. ``names`` maps the episode's streams to agent names."""
    marks = redactions(e for _, e in events)
    if not marks:
        return events
    out = []
    for n, e in events:
        fields = marks.get((names.get(e.originator_id, ""), e.originator_version))
        out.append((n, redacted(e, fields) if fields else e))
    return out
