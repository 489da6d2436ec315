"""Org memory: durable facts about the business, as a projection of fact events.

A fact has a subject (``customer:ada``), a key, a statement, the event it came from, when
it was true (``valid_from``/``valid_to``) and when tether learned it (``recorded_at``). A
newer fact with the same subject and key supersedes the old one instead of overwriting
it, so both stay queryable: what is true now, what was true at a date, and what tether
believed on a date.

The read model is two SQLAlchemy tables, caught up from the event log on every query (a
tracking row records how far it got, in the same transaction as the rows it wrote) and
rebuildable from the events at any time. When two agents tell different things about
the same subject and key, a ``FactConflicted`` event records both and how the topology's
policy settled it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from eventsourcing.utils import get_topic

from .events import (
    Event,
    FactConflicted,
    FactForgotten,
    FactRecorded,
    FactUsed,
    subject_stream_id,
)
from .store import Store, new_event

PROJECTION = "org_facts"
_TIMES = ("valid_from", "valid_to", "recorded_at", "superseded_at", "last_used_at", "forgotten_at")
"""The tracking name of this projection."""


@dataclass(frozen=True)
class FactPolicy:
    """How conflicting facts from different agents are settled."""

    on_conflict: Literal["latest_wins", "first_wins", "prefer"] = "latest_wins"
    """``latest_wins``: the newer fact replaces the held one; ``first_wins``: the held one
    stays; ``prefer``: the agent earlier in ``prefer`` wins (ties: the newer fact)."""
    prefer: tuple[str, ...] = ()
    """Agents in order of trust, for ``prefer``; agents not listed rank last."""

    def settle(self, held_agent: str, offered_agent: str) -> tuple[str, str]:
        """(``replaced`` or ``kept``, the reason)."""
        if self.on_conflict == "first_wins":
            return "kept", "the fact held first stays (policy first_wins)"
        if self.on_conflict == "prefer":
            rank = {a: i for i, a in enumerate(self.prefer)}
            held, offered = rank.get(held_agent, len(rank)), rank.get(offered_agent, len(rank))
            if held < offered:
                return "kept", f"{held_agent} is trusted over {offered_agent} (policy prefer)"
            if offered < held:
                return "replaced", (f"{offered_agent} is trusted over {held_agent} (policy prefer)")
        return "replaced", "the newer fact wins (policy latest_wins)"


@dataclass(frozen=True)
class Retention:
    """What org memory keeps. ``None`` means no limit."""

    ttl: timedelta | None = None
    """Forget facts recorded longer ago than this."""
    max_per_subject: int | None = None
    """Keep at most this many current facts per subject (the newest)."""
    unused_for: timedelta | None = None
    """Forget facts nobody recalled for this long (decay; a fact never used counts from
    when it was recorded)."""


@dataclass(frozen=True)
class Fact:
    """One fact as the read model holds it."""

    id: int
    """The notification id of its ``FactRecorded`` event."""
    subject: str
    key: str
    statement: str
    agent: str
    episode: str
    source_event: str
    """The event (stream/position) of the action that established it."""
    valid_from: datetime
    valid_to: datetime | None
    recorded_at: datetime
    superseded_at: datetime | None
    """When tether stopped believing it (a newer fact arrived); None = believed now."""
    superseded_by: int | None
    last_used_at: datetime | None
    """When it was last recalled; None = never."""
    forgotten_at: datetime | None
    """When retention forgot it; None = remembered."""
    forgotten_why: str | None


@dataclass(frozen=True)
class Conflict:
    """A settled conflict, as the read model holds it."""

    id: int
    subject: str
    key: str
    held: str
    offered: str
    policy: str
    outcome: str
    reason: str
    recorded_at: datetime


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class OrgMemory:
    """Org-memory facts: the projection, its queries, and the events a new fact makes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        md = sa.MetaData()
        ts = sa.DateTime(timezone=True)
        self.facts = sa.Table(
            "tether_facts",
            md,
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("subject", sa.String(200), nullable=False, index=True),
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("statement", sa.Text, nullable=False),
            sa.Column("agent", sa.String(200), nullable=False),
            sa.Column("episode", sa.String(100), nullable=False),
            sa.Column("source_event", sa.String(200), nullable=False),
            sa.Column("valid_from", ts, nullable=False),
            sa.Column("valid_to", ts),
            sa.Column("recorded_at", ts, nullable=False),
            sa.Column("superseded_at", ts),
            sa.Column("superseded_by", sa.BigInteger),
            sa.Column("last_used_at", ts),
            sa.Column("forgotten_at", ts),
            sa.Column("forgotten_why", sa.String(200)),
        )
        self.conflicts = sa.Table(
            "tether_fact_conflicts",
            md,
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("subject", sa.String(200), nullable=False, index=True),
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("held", sa.Text, nullable=False),
            sa.Column("offered", sa.Text, nullable=False),
            sa.Column("policy", sa.String(50), nullable=False),
            sa.Column("outcome", sa.String(20), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("recorded_at", ts, nullable=False),
        )
        self.tracking = sa.Table(
            "tether_projections",
            md,
            sa.Column("name", sa.String(100), primary_key=True),
            sa.Column("position", sa.BigInteger, nullable=False),
        )
        self._heal(md)
        md.create_all(store.engine)
        self.topics = [
            get_topic(t) for t in (FactRecorded, FactConflicted, FactUsed, FactForgotten)
        ]

    def _heal(self, md: sa.MetaData) -> None:
        """A read model written by an older tether is dropped; it is rebuilt from events."""
        found = sa.inspect(self.store.engine)
        if not found.has_table(self.facts.name):
            return
        have = {c["name"] for c in found.get_columns(self.facts.name)}
        if have == {c.name for c in self.facts.columns}:
            return
        with self.store.writing() as conn:
            for table in (self.facts, self.conflicts):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
            if found.has_table(self.tracking.name):
                conn.execute(sa.delete(self.tracking).where(self.tracking.c.name == PROJECTION))

    # --- the projection ---------------------------------------------------------------

    def catch_up(self, batch: int = 5_000) -> int:
        """Fold fact events recorded since the last catch-up; how many were folded."""
        done = 0
        t = self.tracking
        with self.store.engine.connect() as conn:
            tracked = conn.execute(sa.select(t.c.name).where(t.c.name == PROJECTION)).first()
        if tracked is None:
            try:
                with self.store.writing() as conn:
                    conn.execute(sa.insert(t).values(name=PROJECTION, position=0))
            except sa.exc.IntegrityError:
                pass  # another process made the tracking row a moment ago
        while True:
            with self.store.writing() as conn:
                # The row lock makes concurrent catch-ups take turns (SQLite's write lock
                # already does): none folds an event twice.
                position = conn.execute(
                    sa.select(t.c.position).where(t.c.name == PROJECTION).with_for_update()
                ).scalar_one()
                found = self.store.recorder.select_notifications(
                    start=position, limit=batch, topics=self.topics, inclusive_of_start=False
                )
                for n in found:
                    self._apply(conn, n.id, self.store.decode(n))
                if found:
                    conn.execute(
                        sa.update(t).where(t.c.name == PROJECTION).values(position=found[-1].id)
                    )
            done += len(found)
            if len(found) < batch:
                return done

    def rebuild(self) -> int:
        """Throw the read model away and fold every fact event again."""
        with self.store.writing() as conn:
            conn.execute(sa.delete(self.facts))
            conn.execute(sa.delete(self.conflicts))
            conn.execute(sa.delete(self.tracking).where(self.tracking.c.name == PROJECTION))
        return self.catch_up()

    def _apply(self, conn: sa.Connection, notification_id: int, e: Event) -> None:
        if isinstance(e, FactConflicted):
            conn.execute(
                sa.insert(self.conflicts).values(
                    id=notification_id,
                    subject=e.subject,
                    key=e.key,
                    held=str(e.held.get("statement", "")),
                    offered=str(e.offered.get("statement", "")),
                    policy=e.policy,
                    outcome=e.outcome,
                    reason=e.reason,
                    recorded_at=e.at,
                )
            )
            return
        f = self.facts
        if isinstance(e, FactUsed):
            conn.execute(sa.update(f).where(f.c.id.in_(e.facts)).values(last_used_at=e.at))
            return
        if isinstance(e, FactForgotten):
            conn.execute(
                sa.update(f)
                .where(f.c.id.in_(e.facts), f.c.forgotten_at.is_(None))
                .values(forgotten_at=e.at, forgotten_why=f"{e.why}: {e.rule}")
            )
            return
        if not isinstance(e, FactRecorded):
            return
        valid_from = e.valid_from or e.at
        conn.execute(
            sa.update(f)
            .where(
                f.c.subject == e.subject,
                f.c.key == e.key,
                f.c.superseded_at.is_(None),
            )
            .values(
                superseded_at=e.at,
                superseded_by=notification_id,
                valid_to=sa.func.coalesce(f.c.valid_to, valid_from),
            )
        )
        conn.execute(
            sa.insert(f).values(
                id=notification_id,
                subject=e.subject,
                key=e.key,
                statement=e.statement,
                agent=str(e.source.get("agent", "")),
                episode=str(e.source.get("episode", "")),
                source_event=str(e.source.get("event", "")),
                valid_from=valid_from,
                valid_to=e.valid_to,
                recorded_at=e.at,
            )
        )

    # --- queries ----------------------------------------------------------------------

    def about(
        self,
        subject: str,
        *,
        as_of: datetime | None = None,
        valid_at: datetime | None = None,
        history: bool = False,
    ) -> list[Fact]:
        """Facts about a subject: believed now, or believed ``as_of`` a (recording) time,
        or true ``valid_at`` a time; ``history`` lists every fact ever recorded."""
        self.catch_up()
        f = self.facts
        q = sa.select(f).where(f.c.subject == subject)
        return self._facts(self._when(q, as_of, valid_at, history))

    def search(
        self, keyword: str, *, as_of: datetime | None = None, history: bool = False
    ) -> list[Fact]:
        """Facts whose statement or key contains ``keyword`` (any case)."""
        self.catch_up()
        f = self.facts
        like = f"%{keyword.lower()}%"
        q = sa.select(f).where(
            sa.or_(sa.func.lower(f.c.statement).like(like), sa.func.lower(f.c.key).like(like))
        )
        return self._facts(self._when(q, as_of, None, history))

    def current(self, subject: str, key: str) -> Fact | None:
        """The fact believed now for one subject and key."""
        found = [x for x in self.about(subject) if x.key == key]
        return found[0] if found else None

    def conflicts_about(self, subject: str) -> list[Conflict]:
        self.catch_up()
        c = self.conflicts
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(c).where(c.c.subject == subject).order_by(c.c.id))
            return [Conflict(**{**r._asdict(), "recorded_at": _utc(r.recorded_at)}) for r in rows]

    def _when(
        self, q: Any, as_of: datetime | None, valid_at: datetime | None, history: bool
    ) -> Any:
        f = self.facts
        if not history:
            q = q.where(f.c.forgotten_at.is_(None))
            if as_of is None:
                q = q.where(f.c.superseded_at.is_(None))
            else:
                q = q.where(
                    f.c.recorded_at <= as_of,
                    sa.or_(f.c.superseded_at.is_(None), f.c.superseded_at > as_of),
                )
        if valid_at is not None:
            q = q.where(
                f.c.valid_from <= valid_at, sa.or_(f.c.valid_to.is_(None), f.c.valid_to > valid_at)
            )
        return q.order_by(f.c.id)

    def _facts(self, q: Any) -> list[Fact]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [Fact(**{**r._asdict(), **{k: _utc(getattr(r, k)) for k in _TIMES}}) for r in rows]

    # --- use and retention ---------------------------------------------------------------

    def recall(self, subject: str, *, by: str, at: datetime) -> list[Fact]:
        """The facts believed now about a subject, recording that ``by`` used them."""
        found = self.about(subject)
        if found:
            self.store.append(
                [],
                tail=[
                    new_event(
                        FactUsed,
                        subject_stream_id(subject),
                        0,
                        at,
                        subject=subject,
                        facts=[x.id for x in found],
                        by=by,
                    )
                ],
            )
        return found

    def retain(self, policy: Retention, now: datetime) -> list[FactForgotten]:
        """Forget what ``policy`` says to forget, each as a recorded event; those events."""
        self.catch_up()
        f = self.facts
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(f)
                .where(f.c.forgotten_at.is_(None), f.c.superseded_at.is_(None))
                .order_by(f.c.subject, f.c.recorded_at.desc())
            ).all()
        chosen: dict[tuple[str, str, str], list[int]] = {}
        kept: dict[str, int] = {}
        for r in rows:
            recorded, used = _utc(r.recorded_at), _utc(r.last_used_at) or _utc(r.recorded_at)
            assert recorded is not None and used is not None
            why: tuple[str, str] | None = None
            if policy.ttl is not None and recorded < now - policy.ttl:
                why = ("ttl", f"ttl {policy.ttl.days} days")
            elif policy.unused_for is not None and used < now - policy.unused_for:
                why = ("decay", f"unused for {policy.unused_for.days} days")
            elif policy.max_per_subject is not None:
                kept[r.subject] = kept.get(r.subject, 0) + 1
                if kept[r.subject] > policy.max_per_subject:
                    why = ("cap", f"at most {policy.max_per_subject} facts per subject")
            if why is not None:
                chosen.setdefault((r.subject, *why), []).append(r.id)
        events = [
            new_event(
                FactForgotten,
                subject_stream_id(subject),
                0,
                now,
                subject=subject,
                facts=sorted(ids),
                why=why,
                rule=rule,
            )
            for (subject, why, rule), ids in chosen.items()
        ]
        if events:
            self.store.append([], tail=events)
            self.catch_up()
        return events

    # --- writing ------------------------------------------------------------------------

    def offer(
        self,
        subject: str,
        key: str,
        statement: str,
        source: dict[str, Any],
        at: datetime,
        policy: FactPolicy,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
    ) -> list[Event]:
        """The events a new fact makes: itself, and a conflict when another agent holds a
        different statement for the same subject and key (settled by ``policy``). They are
        appended at the end of the subject's stream (``Store.append(tail=...)``)."""
        stream = subject_stream_id(subject)
        recorded = new_event(
            FactRecorded,
            stream,
            0,
            at,
            subject=subject,
            key=key,
            statement=statement,
            source=source,
            valid_from=valid_from,
            valid_to=valid_to,
        )
        held = self.current(subject, key)
        agent = str(source.get("agent", ""))
        if held is None or held.statement == statement or held.agent == agent:
            return [recorded]
        outcome, reason = policy.settle(held.agent, agent)
        conflict = new_event(
            FactConflicted,
            stream,
            0,
            at,
            subject=subject,
            key=key,
            held={
                "statement": held.statement,
                "source": {
                    "agent": held.agent,
                    "episode": held.episode,
                    "event": held.source_event,
                },
            },
            offered={"statement": statement, "source": source},
            policy=policy.on_conflict,
            outcome=outcome,
            reason=reason,
        )
        return [conflict, recorded] if outcome == "replaced" else [conflict]
