"""Forgetting, explicit and recorded: erasure of a data subject by crypto-shredding.

``erase_subject`` destroys the subject's key, so every field sealed under it (in episodes
about the subject, in facts about the subject) reads as erased from then on; the event
log itself stays append-only. What was derived from the plaintext is thrown away and
rebuilt — the org-memory read model, timeline snapshots — and the database is made to
forget the bytes too, as its backend knows how (``scrub``: zeroed and vacuumed pages, a
truncated write-ahead log, tables rewritten without dead row versions). A
``SubjectErased`` receipt records who asked, why, and what was affected.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from tether.memory.errors import ConfigError, EpisodeNotFound, NotFound

from ._redaction import fields_of
from ._steps import Step, events_at, places
from .episodes import list_episodes
from .events import (
    EpisodeForgotten,
    EpisodeStarted,
    Event,
    FieldRedacted,
    SubjectErased,
    agent_stream_id,
    erasure_stream_id,
)
from .org import OrgMemory
from .sources import Clock
from .store import Store, new_event


@dataclass(frozen=True)
class ErasureReceipt:
    """What an erasure did."""

    subject: str
    sealed_events: int
    facts: int
    rebuilt: list[str]
    receipt: SubjectErased


def _sealed_under(store: Store, subject: str) -> int:
    """Events holding fields sealed under the subject's key (counted without decrypting)."""
    t = store.recorder.table
    marker = f'"s":"{subject}"'
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.state).where(t.c.state.is_not(None))).all()
    return sum(1 for (state,) in rows if marker.encode() in bytes(state))


def erase_subject(
    store: Store, subject: str, *, requested_by: str, reason: str, clock: Clock
) -> ErasureReceipt:
    """Erase a data subject; ``NotFound`` if tether holds nothing about them."""
    org = OrgMemory(store)
    facts = len(org.about(subject, history=True))
    sealed = _sealed_under(store, subject)
    if store.keys.get(subject) is None and not facts and not sealed:
        raise NotFound(
            f"no data about subject {subject!r}: no key, no facts, no sealed "
            "events; `tether facts --search WORD` finds subjects"
        )
    store.keys.destroy(subject)
    folded = org.rebuild()
    rebuilt = [
        f"org facts read model ({folded} event{'s' * (folded != 1)} folded again)",
        f"timeline snapshots ({store.snapshots.drop()} dropped; rebuilt on next load)",
    ]
    receipt_events = store.read(erasure_stream_id(subject))
    receipt: Event = SubjectErased(
        originator_id=erasure_stream_id(subject),
        originator_version=len(receipt_events) + 1,
        at=clock.now(),
        subject=subject,
        requested_by=requested_by,
        reason=reason,
        sealed_events=sealed,
        facts=facts,
        rebuilt=rebuilt,
    )
    store.append([receipt])
    scrub(store)
    assert isinstance(receipt, SubjectErased)
    return ErasureReceipt(subject, sealed, facts, rebuilt, receipt)


SCRUBBED = ("tether_facts", "tether_fact_conflicts", "tether_snapshots", "tether_subject_keys")
"""The tables an erasure deletes rows of: the bytes of those rows must go too."""


def scrub(store: Store) -> None:
    """Make the database forget deleted bytes: free pages, old row versions, the WAL
    (how is the backend's: ``Backend.scrub``)."""
    store.recorder.close()  # the writer connection must not hold the file open
    store.backend.scrub(SCRUBBED)


def redact_field(
    store: Store,
    episode_id: uuid.UUID,
    agent: str,
    position: int,
    field: str,
    *,
    reason: str,
    by: str,
    clock: Clock,
) -> FieldRedacted:
    """Redact one field of the event at ``position`` in an agent's stream; the redaction
    is itself an event."""
    [event] = redact_step(
        store,
        episode_id,
        agent,
        Step("event", position),
        field,
        reason=reason,
        by=by,
        clock=clock,
    )
    return event


def redact_step(
    store: Store,
    episode_id: uuid.UUID,
    agent: str,
    step: Step,
    field: str,
    *,
    reason: str,
    by: str,
    clock: Clock,
) -> list[FieldRedacted]:
    """Redact ``field`` in every event ``step`` names (``#2``: each event of the action
    that has the field; ``turn 3``; ``event 7``), each redaction recorded as an event."""
    own = store.read(episode_id, limit=1)
    if not own or not isinstance(own[0], EpisodeStarted):
        raise EpisodeNotFound(str(episode_id))
    started = own[0]
    if agent != "episode" and agent not in started.agents:
        raise ConfigError(
            f"agent {agent!r} is not in episode {episode_id}; it has {started.agents}"
        )
    stream = episode_id if agent == "episode" else agent_stream_id(episode_id, agent)
    events = store.read(stream)
    found = events_at(events, step)
    if not found:
        raise ConfigError(f"{step}: {agent} has no such place ({places(events)})")
    fixed = ("originator_id", "originator_version", "at")
    targets = [e for e in found if field in fields_of(e) and field not in fixed]
    if not targets:
        allowed = [
            n for n in dict.fromkeys(n for e in found for n in fields_of(e)) if n not in fixed
        ]
        kinds = "/".join(dict.fromkeys(type(e).__name__ for e in found))
        raise ConfigError(f"field {field!r}: {step} is {kinds}, which has {allowed}")
    marks = [
        new_event(
            FieldRedacted,
            episode_id,
            0,
            clock.now(),
            agent=agent,
            position=e.originator_version,
            field=field,
            reason=reason,
            by=by,
        )
        for e in targets
    ]
    store.append([], tail=marks, subject=started.subject)
    store.snapshots.drop(episode_id)  # the snapshot may hold the field's old value
    return marks


def retain_episodes(
    store: Store, *, ttl: timedelta | None, keep: int | None, now: datetime
) -> list[EpisodeForgotten]:
    """Forget finished episodes older than ``ttl`` or beyond the newest ``keep``, each as a
    recorded event. Running and waiting episodes are never forgotten."""
    finished = [e for e in list_episodes(store) if e.status in ("completed", "failed")]
    finished.sort(key=lambda e: e.started_at, reverse=True)
    out = []
    for rank, episode in enumerate(finished):
        why: tuple[str, str] | None = None
        if ttl is not None and datetime.fromisoformat(episode.started_at) < now - ttl:
            why = ("ttl", f"ttl {ttl.days} days")
        elif keep is not None and rank >= keep:
            why = ("cap", f"at most {keep} finished episodes")
        if why is None:
            continue
        event = new_event(EpisodeForgotten, episode.episode_id, 0, now, why=why[0], rule=why[1])
        store.append([], tail=[event])
        store.snapshots.drop(episode.episode_id)
        out.append(event)
    return out
