"""The event store: one URL, eventsourcing's mapper, and tether's recorder.

The URL's scheme picks the backend (``memory/backends.py``): a SQLite file
(``.tether/tether.db`` by default) for one machine, PostgreSQL for a fleet that spans
nodes, ``memory://`` for a store that lives in this process (tests, notebooks). ``Store``
appends events of any number of streams atomically and reads them back as typed events;
``Journal`` is the single writer of one stream.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError, Notification, OperationalError, StoredEvent
from eventsourcing.utils import get_topic

from tether.memory.errors import (
    LeaseLost,
    StoreCorrupt,
    StoreMissing,
    StoreNotInitialised,
    StoreUnavailable,
    StoreUrlError,
    StreamConflict,
)

from . import schema
from ._codec import bulk, new_mapper
from ._keys import SubjectKeys
from ._snapshots import Snapshots
from .audit import AuditKey, AuditTrail, resolve_key_path
from .backend import first_line
from .backends import open_backend
from .events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalTimedOut,
    EffectApplied,
    EpisodeForgotten,
    EpisodeStarted,
    EscalationDecided,
    EscalationRequested,
    Event,
    FactConflicted,
    FactForgotten,
    FactRecorded,
    FactUsed,
    FieldRedacted,
    SubjectErased,
)
from .leases import Fence, Leases
from .recorder import writing
from .sources import Clock

StoreMode = Literal["existing", "create", "init"]
"""What ``Store`` may do with what it finds at its URL. ``existing``: a tether store must be
there, nothing is created (commands that read, or act on what was recorded). ``create``: a
new file or an empty database becomes a store; a database of other tables is refused.
``init``: tether's tables are added whatever else the database holds (``--init``)."""

E = TypeVar("E", bound=Event)

CATALOGUED: tuple[type[Event], ...] = (
    EpisodeStarted,
    ApprovalRequested,
    ApprovalGranted,
    ApprovalDenied,
    ApprovalTimedOut,
    EscalationDecided,
    EscalationRequested,
    EffectApplied,
    FactRecorded,
    FactConflicted,
    FactUsed,
    FactForgotten,
    SubjectErased,
    FieldRedacted,
    EpisodeForgotten,
)
"""Event types listed across streams (episodes, the inbox, the ledger, facts): indexed."""


class _Tables(Protocol):
    """A part of the store with tables of its own."""

    metadata: sa.MetaData


class Store:
    """Appends and reads tether's events."""

    def __init__(
        self,
        url: str | None = None,
        *,
        audit_key: str | Path | None = None,
        mode: StoreMode = "create",
    ) -> None:
        """``mode``: what may be created at ``url`` (``StoreMode``); ``StoreMissing`` or
        ``StoreNotInitialised`` when what is there does not allow it."""
        self.backend = open_backend(url)
        """The database behind the store (``memory/backend.py``)."""
        self.url = self.backend.url
        self.audit_key_path = resolve_key_path(audit_key)
        """The file of the key that signs the audit trail (``memory/audit.py``)."""
        self._audit_key: AuditKey | None = None
        self._key_lock = threading.Lock()
        self.engine = self.backend.engine
        self.audit = AuditTrail(self.engine)
        self.recorder = self.backend.recorder(
            catalogued_topics=map(get_topic, CATALOGUED),
            audit=self.audit,
            audit_key=self.signing_key,
        )
        self.keys = SubjectKeys(self.engine)
        self.mapper = new_mapper(self.keys)
        self.snapshots = Snapshots(self.engine, self.mapper.transcoder)
        self.leases = Leases(self.backend)
        """Who runs each episode (``memory/leases.py``); fenced appends are checked here."""
        parts: tuple[_Tables, ...] = (
            self.recorder,
            self.audit,
            self.snapshots,
            self.keys,
            self.leases,
        )
        try:
            self._open(mode, {name for p in parts for name in p.metadata.tables})
        except (sa.exc.SQLAlchemyError, OSError) as e:
            self.backend.close()
            raise self.backend.unavailable(e) from e
        except BaseException:
            self.backend.close()
            raise

    def _open(self, mode: StoreMode, ours: set[str]) -> None:
        """Check the store at the URL is one this tether reads (``memory/schema.py``), or
        make a new one there, as ``mode`` allows."""
        found = self.backend.tables()
        if found is not None and not {*ours, schema.VERSION_TABLE}.isdisjoint(found):
            if schema.VERSION_TABLE not in found:
                self.recorder.check_shape()  # made before schema versions: is it tether's?
            schema.check(self.backend, found)
            return
        if mode == "existing" or self.backend.read_only:
            raise StoreMissing(self.backend.redacted, None if found is None else sorted(found))
        if found and mode != "init":
            raise StoreNotInitialised(self.backend.redacted, sorted(found))
        self.backend.prepare()
        schema.create(self.backend)

    def ensure_shared(self, by: str) -> None:
        """``StoreUrlError`` if other processes (``by``) cannot open this store."""
        if self.backend.process_local:
            raise StoreUrlError(
                self.backend.redacted,
                f"a {self.backend.name}:// store lives in this process and {by} run in "
                "other processes; give a SQLite file or PostgreSQL",
            )

    def signing_key(self) -> AuditKey:
        """The audit signing key, loaded once; created if its file does not exist yet."""
        with self._key_lock:
            if self._audit_key is None:
                self._audit_key = AuditKey.load(self.audit_key_path, create=True)
            return self._audit_key

    def close(self) -> None:
        """Release the database connections."""
        self.recorder.close()
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------------

    def writing(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A write transaction for read models beside the log (``recorder.writing``)."""
        return writing(self.engine)

    def append(
        self,
        events: Sequence[Event],
        *,
        tail: Sequence[Event] = (),
        subject: str | None = None,
        audit: Sequence[dict[str, Any]] = (),
        fence: Fence | None = None,
    ) -> list[int]:
        """Append events (of any streams) atomically; return their notification ids.

        ``tail`` events go to the end of their streams, whatever position they carry: for
        streams many writers share (facts about a subject), where taking the next position
        inside the transaction is the safe way to retry a conflict. Raises
        ``StreamConflict`` if a stream already has an event at one of the fixed positions.
        Appends from many threads at once share a transaction (group commit); this returns
        only after the transaction holding these events committed. ``subject``: the data
        subject whose key seals the events' personal fields. ``audit``: records of the
        decisions among the events, appended to the audit trail in the same transaction.
        ``fence``: the episode lease its writer holds; if another runner has taken the
        episode over since, nothing is written and ``LeaseLost`` is raised.
        """
        to_stored = self.mapper.to_stored_event
        stored = [to_stored(e, subject) for e in events]
        stored_tail = [to_stored(e, subject) for e in tail]
        try:
            return list(
                self.recorder.insert_events(stored, tail=stored_tail, audit=audit, fence=fence)
            )
        except LeaseLost as e:
            current = self.leases.current(uuid.UUID(e.episode_id))
            raise LeaseLost(e.episode_id, e.token, current) from None
        except IntegrityError as e:
            streams = sorted({str(e_.originator_id) for e_ in events})
            raise StreamConflict(streams, first_line(e)) from e
        except OperationalError as e:
            raise self.backend.unavailable(e) from e

    # --- reading ----------------------------------------------------------------------

    def read(
        self, stream_id: uuid.UUID, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The events of one stream, in order, after position ``after``."""
        try:
            stored = self.recorder.select_events(stream_id, gt=after or None, limit=limit)
        except sa.exc.OperationalError as e:
            raise StoreUnavailable(self.backend.redacted, first_line(e)) from e
        return [self.decode(s) for s in stored]

    def read_streams(
        self, stream_ids: Iterable[uuid.UUID], *, after: int = 0
    ) -> list[tuple[int, Event]]:
        """Every event of the given streams recorded after notification ``after``, in order."""
        try:
            rows = self.recorder.select_streams(list(stream_ids), gt=after)
        except OperationalError as e:
            raise StoreUnavailable(self.backend.redacted, first_line(e)) from e
        try:
            with bulk():
                return self.mapper.from_rows(rows)
        except Exception:
            for r in rows:  # find the record that failed, to name it
                self.decode(StoredEvent(r[1], r[2], r[3], r[4]))
            raise

    def of_type(self, *types: type[E], start: int = 1, limit: int = 100_000) -> list[tuple[int, E]]:
        """Events of the given types across all streams, in recorded order."""
        topics = [get_topic(t) for t in types]
        found = self.recorder.select_notifications(start=start, limit=limit, topics=topics)
        out: list[tuple[int, E]] = []
        for n in found:
            event = self.decode(n)
            assert isinstance(event, types)
            out.append((n.id, event))
        return out

    def decode(self, stored: StoredEvent | Notification) -> Event:
        """A stored record as its event; ``StoreCorrupt`` names the stream and position."""
        try:
            event = self.mapper.to_domain_event(stored)
        except Exception as e:
            raise StoreCorrupt(str(stored.originator_id), stored.originator_version, str(e)) from e
        assert isinstance(event, Event)
        return event


class Journal:
    """The single writer of one stream: numbers events, holds them, appends them in one go.

    Events are held until ``flush``; the caller flushes at durability points (before a
    side effect, at an approval request, at the end of an action), so an action costs one
    or two transactions however many stages it passes.
    """

    def __init__(self, store: Store, stream_id: uuid.UUID, clock: Clock, version: int = 0):
        self.store = store
        self.stream_id = stream_id
        self.clock = clock
        self.version = version
        self.pending: list[Event] = []
        self.observers: list[Callable[[Event], None]] = []
        """Called with each new event, so state folded from the stream stays current."""
        self.subject: str | None = None
        """The data subject whose key seals this stream's personal fields."""
        self.auditor: Callable[[Event], dict[str, Any] | None] | None = None
        """Turns a new event that records a decision into its audit record."""
        self.pending_audit: list[dict[str, Any]] = []
        self.last_at: datetime | None = None
        """The time of the stream's latest event (None: it has none)."""
        self.fence: Fencing | None = None
        """The lease of the episode this stream belongs to, as its runner holds it: every
        flush carries it, so a runner that lost the episode records nothing more."""

    @classmethod
    def after(
        cls, store: Store, stream_id: uuid.UUID, clock: Clock, history: Sequence[Event]
    ) -> Journal:
        """The journal that continues a stream whose events so far are ``history``."""
        journal = cls(store, stream_id, clock, history[-1].originator_version if history else 0)
        journal.last_at = history[-1].at if history else None
        return journal

    def record(self, cls: type[E], **fields: Any) -> E:
        """Number and stamp a new event of this stream; it is written at the next flush."""
        self.version += 1
        event = cls(
            originator_id=self.stream_id,
            originator_version=self.version,
            at=self.clock.now(),
            **fields,
        )
        self.pending.append(event)
        self.last_at = event.at
        for observe in self.observers:
            observe(event)
        if self.auditor is not None:
            body = self.auditor(event)
            if body is not None:
                self.pending_audit.append(body)
        return event

    def flush(self, *others: Event, tail: Sequence[Event] = ()) -> None:
        """Append the held events, ``others`` of other streams and ``tail`` events (see
        ``Store.append``) in one transaction."""
        if not self.pending and not others and not tail:
            return
        own, audit = self.pending, self.pending_audit
        self.pending, self.pending_audit = [], []
        try:
            self.store.append(
                [*own, *others],
                tail=tail,
                subject=self.subject,
                audit=audit,
                fence=self.fence.current if self.fence is not None else None,
            )
        except BaseException:
            # Nothing was written; keep it all for the caller to retry.
            self.pending, self.pending_audit = own, audit
            raise


def flush_together(journals: Sequence[Journal]) -> None:
    """Flush the held events of many journals of one data subject in one transaction
    (starting thousands of agents must not cost thousands of commits)."""
    if not journals:
        return
    subjects = {j.subject for j in journals}
    if len(subjects) > 1:
        raise ValueError(f"journals of different subjects cannot share a transaction: {subjects}")
    held = [(j.pending, j.pending_audit) for j in journals]
    for j in journals:
        j.pending, j.pending_audit = [], []
    try:
        fence = journals[0].fence
        journals[0].store.append(
            [e for own, _ in held for e in own],
            subject=journals[0].subject,
            audit=[a for _, audit in held for a in audit],
            fence=fence.current if fence is not None else None,
        )
    except BaseException:
        for j, (own, audit) in zip(journals, held, strict=True):
            j.pending, j.pending_audit = own, audit  # nothing was written: keep it all
        raise


class Fencing:
    """The lease token a runner holds on one episode, shared by the journals of the
    episode's streams in one process (the runner may tell them a new one)."""

    def __init__(self, episode_id: uuid.UUID, token: int | None = None) -> None:
        self.episode = str(episode_id)
        self.token = token

    @property
    def current(self) -> Fence | None:
        return None if self.token is None else Fence(self.episode, self.token)


def new_event(cls: type[E], stream_id: uuid.UUID, version: int, at: datetime, **fields: Any) -> E:
    """An event of a stream that has no journal (an approval decision, an effect)."""
    return cls(originator_id=stream_id, originator_version=version, at=at, **fields)
