"""The event store: one SQLAlchemy URL, eventsourcing's mapper, and tether's recorder.

SQLite (a file, ``.tether/tether.db`` by default) for one machine; PostgreSQL for a fleet
that spans nodes. ``Store`` appends events of any number of streams atomically and reads
them back as typed events; ``Journal`` is the single writer of one stream.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError, Notification, OperationalError, StoredEvent
from eventsourcing.utils import get_topic
from sqlalchemy.engine import URL, Engine, make_url

from tether.memory.errors import (
    LeaseLost,
    StoreCorrupt,
    StoreMissing,
    StoreNotInitialised,
    StoreReadOnly,
    StoreUnavailable,
    StoreUrlError,
    StreamConflict,
)

from .audit import AuditKey, AuditTrail, resolve_key_path
from .codec import bulk, new_mapper
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
from .keys import SubjectKeys
from .leases import Fence, Leases
from .recorder import SqlRecorder, writing
from .snapshots import Snapshots
from .sources import Clock

DEFAULT_URL = "sqlite:///.tether/tether.db"
"""Where the store lives when neither ``--db`` nor ``TETHER_DB`` says otherwise."""

StoreMode = Literal["existing", "create", "init"]
"""What ``Store`` may do with what it finds at its URL. ``existing``: a tether store must be
there, nothing is created (commands that read, or act on what was recorded). ``create``: a
new file or an empty database becomes a store; a database of other tables is refused.
``init``: tether's tables are added whatever else the database holds (``--init``)."""

_DRIVER_OPTIONS = frozenset(
    ("uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements")
)
"""The query options of a SQLite URL that pysqlite takes; any other is SQLite's own."""

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


def resolve_url(url: str | None) -> str:
    """The store URL to use: ``url``, else ``$TETHER_DB``, else the default SQLite file.

    A relative SQLite path is made absolute here, once, so every process of a fleet (the
    driver and its Ray workers, which may run elsewhere) opens the same file.
    """
    raw = url or os.environ.get("TETHER_DB") or DEFAULT_URL
    try:
        parsed = make_url(raw)
    except sa.exc.ArgumentError as e:
        raise StoreUrlError(raw, "not a URL") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _resolve_sqlite(parsed, raw)
    if backend == "postgresql":
        return parsed.render_as_string(hide_password=False)
    raise StoreUrlError(redact(raw), f"unsupported backend {backend!r} (sqlite or postgresql)")


def _resolve_sqlite(parsed: URL, raw: str) -> str:
    query = dict(parsed.query)
    # SQLite's own options (mode=ro, immutable=1) reach it only in its URI form, which
    # SQLAlchemy spells sqlite:///file:path?mode=ro&uri=true ("URI Connections"); without
    # uri=true the driver would drop them, so tether asks for that form itself.
    as_uri = _true(query.get("uri")) or not _DRIVER_OPTIONS.issuperset(query)
    database = parsed.database or ""
    if as_uri and database.startswith("file:"):
        database = unquote(urlsplit(database).path)
    if not database or database == ":memory:" or query.get("mode") == "memory":
        raise StoreUrlError(
            redact(raw), "an in-memory SQLite database cannot be shared; name a file"
        )
    path = Path(database).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not as_uri:
        return parsed.set(database=str(path)).render_as_string(hide_password=False)
    uri = parsed.set(database=f"file:{quote(str(path), safe='/')}", query={**query, "uri": "true"})
    # SQLAlchemy escapes the URI's colon (file%3A/...); both parse the same, and the form
    # its documentation shows is the one people recognise in messages.
    return uri.render_as_string(hide_password=False).replace(":///file%3A", ":///file:", 1)


def _true(value: str | Sequence[str] | None) -> bool:
    return isinstance(value, str) and value.lower() in ("1", "true", "yes", "on")


class _SqliteFile(NamedTuple):
    path: Path
    read_only: bool
    """Opened with mode=ro or immutable=1: nothing can be created or written."""
    immutable: bool


def _sqlite_file(url: URL) -> _SqliteFile | None:
    """The file a resolved SQLite URL names, and how it is opened; None for another backend."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database.startswith("file:") and _true(url.query.get("uri")):
        immutable = _true(url.query.get("immutable"))
        read_only = url.query.get("mode") == "ro" or immutable
        return _SqliteFile(Path(unquote(urlsplit(database).path)), read_only, immutable)
    return _SqliteFile(Path(database), False, False)


def open_engine(url: str) -> Engine:
    """An engine for a resolved URL, with tether's SQLite settings. It creates nothing: a
    SQLite file is made on first connection, which ``Store`` allows or refuses first."""
    parsed = make_url(url)
    try:
        sqlite = _sqlite_file(parsed)
        if sqlite is not None:
            engine = sa.create_engine(
                parsed, connect_args={"timeout": 30, "check_same_thread": False}
            )
            _tune_sqlite(engine, read_only=sqlite.read_only)
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as e:
        raise StoreUrlError(redact(url), f"no database driver: {e}") from e
    _name_read_only(engine, url)
    return engine


def _name_read_only(engine: Engine, url: str) -> None:
    # A write the database refuses as read-only, wherever it is made (a read model, a key,
    # a snapshot), is one StoreReadOnly naming the fix, not the driver's traceback.
    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        if _is_read_only(context.original_exception):
            raise StoreReadOnly(redact(url), _first_line(context.original_exception))


def _is_read_only(e: BaseException) -> bool:
    cause = getattr(e, "orig", None) or e
    if getattr(cause, "sqlstate", None) == "25006":  # PostgreSQL: read_only_sql_transaction
        return True
    text = str(cause)
    return "readonly database" in text or "read-only transaction" in text


def _unavailable(url: str, e: BaseException) -> StoreUnavailable:
    """The error for a database that failed: ``StoreReadOnly`` if it refused a write."""
    kind = StoreReadOnly if _is_read_only(e) else StoreUnavailable
    return kind(redact(url), _first_line(e))


def _tables_at(url: str, engine: Engine) -> list[str] | None:
    """The tables of the database at ``url``; None if there is none (no SQLite file). On
    SQLite the file is read through a read-only connection of its own, so that nothing,
    not even the journal mode the engine sets, changes a file that is not a store."""
    sqlite = _sqlite_file(make_url(url))
    if sqlite is None:
        return sa.inspect(engine).get_table_names()
    if not sqlite.path.exists():
        return None
    # immutable=1 reads a store in a directory one may not write (mode=ro alone cannot).
    options = "mode=ro&immutable=1" if sqlite.immutable else "mode=ro"
    uri = f"{sqlite.path.as_uri()}?{options}"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return [r[0] for r in rows]


class _Tables(Protocol):
    """A part of the store with tables of its own."""

    metadata: sa.MetaData

    def create_table(self) -> None: ...


def _tune_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    # WAL lets readers run beside the writer. With synchronous=NORMAL a commit survives a
    # crashed process (kill -9) but an OS crash or power loss may lose the last commits;
    # that is the trade SQLite recommends for WAL, and PostgreSQL is the store for fleets
    # that need more. The driver's own transaction handling is turned off: the recorder
    # writes with BEGIN IMMEDIATE on its own connection, reads begin as usual.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:  # a read-only connection cannot change it (a store is WAL already)
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Deleted rows (destroyed keys, rebuilt read models) are zeroed, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get("tether_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


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
        self.url = resolve_url(url)
        self.audit_key_path = resolve_key_path(audit_key)
        """The file of the key that signs the audit trail (``memory/audit.py``)."""
        self._audit_key: AuditKey | None = None
        self._key_lock = threading.Lock()
        self.engine = open_engine(self.url)
        self.audit = AuditTrail(self.engine)
        self.recorder = SqlRecorder(
            self.engine,
            catalogued_topics=map(get_topic, CATALOGUED),
            audit=self.audit,
            audit_key=self.signing_key,
        )
        self.keys = SubjectKeys(self.engine)
        self.mapper = new_mapper(self.keys)
        self.snapshots = Snapshots(self.engine, self.mapper.transcoder)
        self.leases = Leases(self.engine)
        """Who runs each episode (``memory/leases.py``); fenced appends are checked here."""
        parts: tuple[_Tables, ...] = (
            self.recorder,
            self.audit,
            self.snapshots,
            self.keys,
            self.leases,
        )
        try:
            self._allow(mode, {name for p in parts for name in p.metadata.tables})
            for part in parts:
                part.create_table()
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
            self.engine.dispose()
            raise _unavailable(self.url, e) from e
        except BaseException:
            self.engine.dispose()
            raise

    def _allow(self, mode: StoreMode, ours: set[str]) -> None:
        """Refuse, as ``mode`` says, a URL where no tether store is; else prepare the place
        where the store's tables are about to be made."""
        found = _tables_at(self.url, self.engine)
        if found is not None and not ours.isdisjoint(found):
            return  # a tether store (tables it lacks, new in this tether, are added)
        sqlite = _sqlite_file(make_url(self.url))
        if mode == "existing" or (sqlite is not None and sqlite.read_only):
            raise StoreMissing(redact(self.url), None if found is None else sorted(found))
        if found and mode != "init":
            raise StoreNotInitialised(redact(self.url), sorted(found))
        if sqlite is not None:
            sqlite.path.parent.mkdir(parents=True, exist_ok=True)

    def signing_key(self) -> AuditKey:
        """The audit signing key, loaded once; created if its file does not exist yet."""
        with self._key_lock:
            if self._audit_key is None:
                self._audit_key = AuditKey.load(self.audit_key_path, create=True)
            return self._audit_key

    def close(self) -> None:
        """Release the database connections."""
        self.recorder.close()
        self.engine.dispose()

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
            raise StreamConflict(streams, _first_line(e)) from e
        except OperationalError as e:
            raise _unavailable(self.url, e) from e

    # --- reading ----------------------------------------------------------------------

    def read(
        self, stream_id: uuid.UUID, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The events of one stream, in order, after position ``after``."""
        try:
            stored = self.recorder.select_events(stream_id, gt=after or None, limit=limit)
        except sa.exc.OperationalError as e:
            raise StoreUnavailable(redact(self.url), _first_line(e)) from e
        return [self.decode(s) for s in stored]

    def read_streams(
        self, stream_ids: Iterable[uuid.UUID], *, after: int = 0
    ) -> list[tuple[int, Event]]:
        """Every event of the given streams recorded after notification ``after``, in order."""
        try:
            rows = self.recorder.select_streams(list(stream_ids), gt=after)
        except OperationalError as e:
            raise StoreUnavailable(redact(self.url), _first_line(e)) from e
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


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__
