"""Comparing event streams: where a new run, or another episode, first differs.

Re-execution compares a run on recorded inputs with the record; ``tether diff`` compares
two episodes agent by agent. Both walk streams position by position and report the first
event and field that differ.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from tether.memory.errors import EpisodeNotFound

from ._steps import label
from .events import (
    EpisodeStarted,
    EpisodeTakenOver,
    Event,
    TopologyChangeAccepted,
    agent_stream_id,
)
from .store import Store

NOT_COMPARED = ("at",)
"""Fields fed back by re-execution but not compared: times are inputs, not decisions."""

BETWEEN_EPISODES = (
    "at",
    "originator_id",
    "episode_id",
    "approval_id",
    "approvals",
    "waiting",
    "effect_key",
)
"""Fields that differ between any two episodes by construction (ids, keys, times)."""


@dataclass(frozen=True)
class Divergence:
    """Where a new run first differs from the recorded one."""

    agent: str
    """The agent whose stream differs (``episode`` for the episode's own stream)."""
    step: int
    """The position in that stream, from 1."""
    event: str
    """The recorded event's type (or the new one's, if nothing was recorded there)."""
    field: str
    """The differing field (``type`` when the events themselves differ)."""
    recorded: Any
    """What the record says."""
    new: Any
    """What the new run did."""
    place: str = ""
    """The position as a person reads it (``memory/_steps.py``): ``#2, event 7``, ``turn
    3, event 5`` or ``event 9``."""

    def __str__(self) -> str:
        return (
            f"{self.agent} {self.place or f'event {self.step}'} ({self.event}.{self.field}): "
            f"recorded {self.recorded!r}, new {self.new!r}"
        )


RUNNERS = (EpisodeTakenOver, TopologyChangeAccepted)
"""Events about who ran an episode and under what, not about what it decided: a
re-execution does not repeat them, so they are left out of its comparison (the events
around them are matched in order)."""


def _matched(events: list[tuple[int, Event]]) -> dict[tuple[uuid.UUID, int], Event]:
    """Events by (stream, place among the stream's events that are not ``RUNNERS``)."""
    places: dict[uuid.UUID, int] = {}
    out: dict[tuple[uuid.UUID, int], Event] = {}
    for _, e in events:
        if isinstance(e, RUNNERS):
            continue
        places[e.originator_id] = at = places.get(e.originator_id, 0) + 1
        out[(e.originator_id, at)] = e
    return out


def first_divergence(
    recorded: list[tuple[int, Event]], new: list[tuple[int, Event]], names: dict[uuid.UUID, str]
) -> Divergence | None:
    """The first place, in recorded order, where ``new`` differs from ``recorded``
    (``RUNNERS`` events aside)."""
    mine = _matched(new)
    ignore = (*NOT_COMPARED, "originator_version")  # (events are matched by place)
    for (stream, at), r in _matched(recorded).items():
        n = mine.pop((stream, at), None)
        found = compare(r, n, names.get(stream, str(stream)), ignore)
        if found is not None:
            return _placed(found, [e for _, e in recorded if e.originator_id == stream])
    for n in mine.values():  # the new run did more than the recorded one
        found = Divergence(
            names.get(n.originator_id, str(n.originator_id)),
            n.originator_version,
            type(n).__name__,
            "type",
            None,
            type(n).__name__,
        )
        return _placed(found, [e for _, e in new if e.originator_id == n.originator_id])
    return None


def _placed(found: Divergence, stream: list[Event]) -> Divergence:
    """``found``, with its position labelled as a person reads it (``#2, event 7``)."""
    return dataclasses.replace(found, place=label(stream, found.step))


def compare(
    recorded: Event, new: Event | None, agent: str, ignore: tuple[str, ...] = NOT_COMPARED
) -> Divergence | None:
    """The first field in which two events at the same position differ."""
    kind = type(recorded).__name__
    step = recorded.originator_version
    if new is None:
        return Divergence(agent, step, kind, "type", kind, None)
    if type(new) is not type(recorded):
        return Divergence(agent, step, kind, "type", kind, type(new).__name__)
    for f in dataclasses.fields(recorded):
        if f.name in ignore:
            continue
        a, b = getattr(recorded, f.name), getattr(new, f.name)
        if a != b:
            return Divergence(agent, step, kind, f.name, a, b)
    return None


@dataclass(frozen=True)
class AgentDiff:
    """How two episodes compare for one agent."""

    agent: str
    same: int
    """Events that match, from the start of the agent's stream."""
    divergence: Divergence | None
    """Where they part ways; None when the streams are the same."""


def diff_episodes(store: Store, a: uuid.UUID, b: uuid.UUID) -> list[AgentDiff]:
    """Per agent (of either episode), where episodes ``a`` and ``b`` part ways."""
    names: list[str] = []
    for episode in (a, b):
        first = store.read(episode, limit=1)
        if not first or not isinstance(first[0], EpisodeStarted):
            raise EpisodeNotFound(str(episode))
        names += [n for n in first[0].agents if n not in names]
    out = []
    for name in names:
        left = store.read(agent_stream_id(a, name))
        right = store.read(agent_stream_id(b, name))
        same, found = 0, None
        for i in range(max(len(left), len(right))):
            r = right[i] if i < len(right) else None
            if i >= len(left):
                assert r is not None
                found = Divergence(name, i + 1, type(r).__name__, "type", None, type(r).__name__)
            else:
                found = compare(left[i], r, name, BETWEEN_EPISODES)
            if found is not None:
                found = _placed(found, left if i < len(left) else right)
                break
            same += 1
        out.append(AgentDiff(name, same, found))
    return out
