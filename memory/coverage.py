"""Coverage: the audit trail against the event log, so that a trail emptied, cut back to
one of its signed records or missing a record in the middle is named.

The chain (``memory/audit.py``) proves that the records it holds were neither altered nor
reordered, and that none is missing between two of them; it cannot tell a trail cut back
to a signed record, or emptied, from one with nothing more to say. The events can: each
decision event has its record, which names it (``"event": "<stream>/<position>"``), and
each record's event stands in the log.

One pass over the decision events, selected by topic and never decoded (an erased
subject's events count like any other), beside the walk over the records that the chain
check makes anyway; only the problem named is decoded, to describe it.

Legitimately without a record of their own: the decisions a fork copied from its source
(the fork's own record names them; the source's records cover the originals).
Legitimately gone: the events of an episode that retention forgot (``EpisodeForgotten``
stays in its stream) may be purged; their records stay, since the trail holds nothing
personal.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.utils import get_topic

from tether.memory.errors import TetherError

from .audit import AuditRecord, Verdict, check_chain
from .events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalTimedOut,
    EpisodeCancelled,
    EpisodeForgotten,
    EpisodeForked,
    EpisodeStarted,
    EpisodeTakenOver,
    EscalationDecided,
    EscalationRequested,
    Event,
    agent_stream_id,
    stage_events,
)
from .store import Store

DECIDING_STAGES: tuple[type[Event], ...] = tuple(
    cls for cls in stage_events().values() if cls.decides
)
"""The gate's stage events that record a decision (``StageEvent.decides``): each appends
an audit record (``Gate.audit``)."""

AUDITED: tuple[type[Event], ...] = (
    *DECIDING_STAGES,
    ApprovalGranted,
    ApprovalDenied,
    ApprovalTimedOut,
    EscalationDecided,
    EpisodeTakenOver,
    EpisodeCancelled,
    EpisodeForked,
)
"""The events that each have an audit record: the gate's stages that decide
(``runtime/gate.py``), a person's (or a deadline's) answer to an approval request
(``runtime/inbox.py``), an escalation's decision (``runtime/escalation.py``), a runner
taking an episode over (``runtime/supervisor.py``), a cancellation (``runtime/launch.py``),
and a fork (``fork_episode``), whose record names the decisions it copied."""


@dataclass
class _Noted:
    """What the walk over the records keeps for the cross-check: little per record."""

    events: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    """Each record's event (``stream/position``) → its place and its episode."""
    copies: dict[str, int] = field(default_factory=dict)
    """A fork's agent stream → the last position it copied (fork records)."""
    last: str = ""
    """The event of the last record."""

    def walk(self, records: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        for r in records:
            yield r  # the chain check sees it first, and stops the walk at a bad one
            body = orjson.loads(r.body)
            event = body.get("event")
            if isinstance(event, str):
                self.events[event] = (r.seq, body.get("episode"))
                self.last = event
            copies = body.get("copies")
            if body.get("kind") == "fork" and isinstance(copies, dict):
                self.copies.update(copies)


def verify_trail(store: Store, keys: dict[str, Ed25519PublicKey]) -> Verdict:
    """Check the trail's chain and signatures with ``keys``, then the trail against the
    events: the first problem is named."""
    # Events and their records commit together: every event up to this one has its record
    # in the trail read next. Later ones may be a fleet deciding meanwhile.
    before = store.recorder.max_notification_id() or 0
    noted = _Noted()
    verdict = check_chain(noted.walk(store.audit.records()), keys)
    if not verdict.intact:
        return verdict
    decisions, gap = _cross_check(store, noted, verdict.records, before)
    return dataclasses.replace(verdict, decisions=decisions, gap=gap)


@dataclass(frozen=True)
class _Row:
    id: int
    stream: str
    position: int
    topic: str

    @property
    def name(self) -> str:
        return f"{self.stream}/{self.position}"


def _cross_check(store: Store, noted: _Noted, records: int, before: int) -> tuple[int, str]:
    """(the decision events read, the first problem or ""). Events after notification
    ``before`` need no record (the trail was read before them); records may name them."""
    t = store.recorder.table
    q = (
        sa.select(t.c.id, t.c.originator_id, t.c.originator_version, t.c.topic)
        .where(t.c.topic.in_([get_topic(cls) for cls in AUDITED]))
        .order_by(t.c.id)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    unmatched = noted.events.copy()  # what is left at the end names no event that stands
    copies = noted.copies
    first: _Row | None = None
    last: _Row | None = None
    without, last_covered = 0, 0
    for id_, stream, position, topic in rows:
        if unmatched.pop(f"{stream}/{position}", None) is not None:
            last_covered = id_
        elif id_ <= before and position > copies.get(stream, 0):
            last = _Row(id_, stream, position, topic)
            first = first or last
            without += 1
    if first is not None and last is not None:
        if records == 0:
            return len(rows), f"empty trail: 0 records while {len(rows)} decision events stand"
        if 0 < last_covered < first.id:
            return len(rows), (
                f"cut short: the trail ends at record {records} (event {noted.last}) but "
                f"{without} decision events after it have no record, up to {last.name} "
                f"({_describe(store, last)})"
            )
        more = f"; {without - 1} more decision events have none" if without > 1 else ""
        return len(rows), (
            f"missing: no audit record for decision event {first.name} "
            f"({_describe(store, first)}){more}"
        )
    if unmatched:
        forgotten = _forgotten(store)
        orphans = sorted(
            (seq, event) for event, (seq, episode) in unmatched.items() if episode not in forgotten
        )
        if orphans:
            seq, event = orphans[0]
            return len(rows), (
                f"orphan: record {seq} audits event {event} ({_record_summary(store, seq)}), "
                "which the store does not hold"
            )
    return len(rows), ""


def _forgotten(store: Store) -> set[str]:
    """The episodes retention forgot (``EpisodeForgotten`` is catalogued: an index read)."""
    t = store.recorder.table
    q = sa.select(t.c.originator_id).where(t.c.catalog == get_topic(EpisodeForgotten))
    with store.engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(q)}


def _record_summary(store: Store, seq: int) -> str:
    t = store.audit.table
    with store.engine.connect() as conn:
        body: dict[str, Any] = orjson.loads(
            conn.execute(sa.select(t.c.body).where(t.c.seq == seq)).scalar_one()
        )
    kind = body.get("kind")
    return _summary(
        str(body.get("stage") if kind == "decision" else kind),
        body.get("episode"),
        body.get("agent"),
        body.get("action"),
    )


def _describe(store: Store, row: _Row) -> str:
    """What a decision event is: its type, episode, agent and action, as far as the store
    can still say (its type alone if it cannot be read)."""
    kind = row.topic.rpartition(":")[2]
    try:
        stream = uuid.UUID(row.stream)
        [event] = store.read(stream, after=row.position - 1, limit=1)
        first = store.read(stream, limit=1)[0]
    except (TetherError, ValueError):
        return kind
    action = getattr(event, "action", None)
    if isinstance(first, EpisodeStarted):
        return _summary(kind, row.stream, None, action)
    if isinstance(first, ApprovalRequested):
        return _summary(kind, first.episode_id, first.agent, first.action)
    if isinstance(first, EscalationRequested):
        return _summary(kind, first.episode_id, first.agent, action)
    for _, started in store.of_type(EpisodeStarted):
        for agent in started.agents:
            if agent_stream_id(started.originator_id, agent) == stream:
                return _summary(kind, started.originator_id, agent, action)
    return _summary(kind, None, None, action)


def _summary(kind: str, episode: object, agent: object, action: object) -> str:
    parts = [f"episode {episode}" if episode is not None else ""]
    parts += [f"agent {agent}" if agent is not None else ""]
    parts += [f"action {action}" if action is not None else ""]
    said = ", ".join(p for p in parts if p)
    return f"{kind} of {said}" if said else kind
