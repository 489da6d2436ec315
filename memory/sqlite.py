"""The SQLite backend: a store in one file, for one machine (the default, ``.tether/tether.db``).

Every process of a fleet on the machine opens the same file (its path is made absolute
once). Readers run beside the one writer (WAL); a write takes the lock up front (``BEGIN
IMMEDIATE``), so two processes never deadlock on a lock upgrade; appends go through the
driver's own connection, kept open for writing, at about raw ``sqlite3``'s speed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import URL, Engine, make_url

from tether.memory.errors import StoreUrlError

from .backend import Backend, redact
from .recorder import Batch, SqlRecorder, fenced_out, placed

_DRIVER_OPTIONS = frozenset(
    ("uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements")
)
"""The query options of a SQLite URL that pysqlite takes; any other is SQLite's own."""


def _true(value: str | Sequence[str] | None) -> bool:
    return isinstance(value, str) and value.lower() in ("1", "true", "yes", "on")


class _File(NamedTuple):
    path: Path
    read_only: bool
    """Opened with mode=ro or immutable=1: nothing can be created or written."""
    immutable: bool


def _file(url: URL) -> _File:
    """The file a resolved SQLite URL names, and how it is opened."""
    database = url.database or ""
    if database.startswith("file:") and _true(url.query.get("uri")):
        immutable = _true(url.query.get("immutable"))
        read_only = url.query.get("mode") == "ro" or immutable
        return _File(Path(unquote(urlsplit(database).path)), read_only, immutable)
    return _File(Path(database), False, False)


class SqliteBackend(Backend):
    """A SQLite file."""

    name: ClassVar[str] = "sqlite"
    placeholder: ClassVar[str] = "?"

    def __init__(self, url: str) -> None:
        self.file = _file(make_url(url))
        super().__init__(url)

    @classmethod
    def resolve(cls, parsed: URL, raw: str) -> str:
        """A relative path made absolute, so every process of a fleet (the driver and its
        Ray workers, which may run elsewhere) opens the same file."""
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
                redact(raw),
                "an in-memory SQLite database cannot be shared; name a file "
                "(or use memory:// for a store that lives in this process)",
            )
        path = Path(database).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not as_uri:
            return parsed.set(database=str(path)).render_as_string(hide_password=False)
        uri = parsed.set(
            database=f"file:{quote(str(path), safe='/')}", query={**query, "uri": "true"}
        )
        # SQLAlchemy escapes the URI's colon (file%3A/...); both parse the same, and the form
        # its documentation shows is the one people recognise in messages.
        return uri.render_as_string(hide_password=False).replace(":///file%3A", ":///file:", 1)

    def create_engine(self) -> Engine:
        engine = sa.create_engine(
            make_url(self.url), connect_args={"timeout": 30, "check_same_thread": False}
        )
        tune(engine, wal=not self.file.read_only)
        return engine

    def tables(self) -> list[str] | None:
        """Read through a read-only connection of its own, so that nothing, not even the
        journal mode the engine sets, changes a file that is not a store."""
        if not self.file.path.exists():
            return None
        # immutable=1 reads a store in a directory one may not write (mode=ro alone cannot).
        options = "mode=ro&immutable=1" if self.file.immutable else "mode=ro"
        uri = f"{self.file.path.as_uri()}?{options}"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                rows = conn.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
                return [r[0] for r in rows]
        except sqlite3.Error as e:  # not a database, or unreadable: as SQLAlchemy says it
            raise sa.exc.OperationalError("reading the table list", None, e) from e

    @property
    def read_only(self) -> bool:
        return self.file.read_only

    @property
    def read_only_fix(self) -> str:
        return (
            "to write, give a --db whose file and directory you may write, without mode=ro "
            "or immutable=1; to only read, open it with ?immutable=1&uri=true"
        )

    def prepare(self) -> None:
        self.file.path.parent.mkdir(parents=True, exist_ok=True)

    def recorder(self, **options: Any) -> SqlRecorder:
        return SqliteRecorder(self.engine, **options)

    def insert_absent(self, table: sa.Table, values: Mapping[str, Any]) -> sa.Executable:
        return insert(table).values(**values).on_conflict_do_nothing()

    def scrub(self, tables: Sequence[str]) -> None:
        """Deleted rows were zeroed already (``secure_delete``); VACUUM rewrites the file
        without its free pages, and the WAL is truncated so no old page lingers there."""
        self.engine.dispose()  # no connection may hold the file open
        raw = self.engine.raw_connection()  # the driver's own: VACUUM runs outside a txn
        try:
            db: Any = raw.driver_connection
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        self.engine.dispose()


def tune(engine: Engine, *, wal: bool, begin: bool = True) -> None:
    """tether's settings on every connection of a SQLite engine, and its transactions.

    ``wal``: set the journal mode (a read-only connection cannot; a store is WAL already).
    ``begin``: begin SQLAlchemy's transactions here (the in-memory backend begins its own).
    """

    # WAL lets readers run beside the writer. With synchronous=NORMAL a commit survives a
    # crashed process (kill -9) but an OS crash or power loss may lose the last commits;
    # that is the trade SQLite recommends for WAL, and PostgreSQL is the store for fleets
    # that need more. The driver's own transaction handling is turned off: the recorder
    # writes with BEGIN IMMEDIATE on its own connection, reads begin as usual.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Deleted rows (destroyed keys, rebuilt read models) are zeroed, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    if begin:

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            immediate = conn.get_execution_options().get("tether_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SqliteRecorder(SqlRecorder):
    """The recorder on SQLite: one ``executemany`` on a connection kept for writing."""

    placeholder: ClassVar[str] = "?"
    integrity_errors = (sqlite3.IntegrityError, sa.exc.IntegrityError)
    operational_errors = (sqlite3.OperationalError, sa.exc.OperationalError)

    def __init__(self, engine: Engine, *, hold_writer: bool = True, **options: Any) -> None:
        """``hold_writer``: keep the writing connection between appends (a file's
        recorder does; the in-memory backend gives its one connection back)."""
        super().__init__(engine, **options)
        self.hold_writer = hold_writer
        self._writer_lock = threading.Lock()
        self._writer: Any = None
        table, leases = self.table.name, self.leases
        self._insert_sql = (
            f"INSERT INTO {table} "
            "(originator_id, originator_version, topic, state, catalog) VALUES (?, ?, ?, ?, ?)"
        )
        self._max_sql = f"SELECT MAX(id) FROM {table}"
        self._max_version_sql = (
            f"SELECT MAX(originator_version) FROM {table} WHERE originator_id = ?"
        )
        self._tokens_sql = f"SELECT token FROM {leases} WHERE episode_id = ?"

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._writer_lock:
            if self._writer is None:
                self._writer = self.engine.raw_connection()
            try:
                yield self._writer.driver_connection
            finally:
                if not self.hold_writer:
                    self._writer.close()
                    self._writer = None

    def _write_batches(self, batches: list[Batch]) -> list[list[int] | BaseException]:
        # The hot path of every governed action. Through SQLAlchemy's execute, an append of
        # nine events cost ~480 µs; on the engine's own DBAPI connection, kept open for
        # writing, it costs about what raw sqlite3 does (~90 µs). One executemany; the
        # transaction is IMMEDIATE, so no one else inserts meanwhile and the new ids are
        # the contiguous range that ends at the largest id.
        with self._connection() as db:
            # A transaction already open on the connection is joined through a savepoint:
            # only the in-memory backend's shared connection can be in one here.
            joined = db.in_transaction
            db.execute("SAVEPOINT tether_append" if joined else "BEGIN IMMEDIATE")
            try:
                # Fences are checked under the write lock, in this process (SQLite has no
                # round trip to save): a batch whose token is no longer its episode's
                # current one is refused alone.
                refused = fenced_out(
                    batches,
                    lambda episode: db.execute(self._tokens_sql, (episode,)).fetchone(),
                )
                accepted = [b for i, b in enumerate(batches) if i not in refused]
                rows = placed(
                    accepted,
                    lambda stream: db.execute(self._max_version_sql, (stream,)).fetchone()[0],
                )
                if rows:
                    db.executemany(self._insert_sql, rows)
                    last = int(db.execute(self._max_sql).fetchone()[0])
                    self._write_audit(db.cursor(), accepted)
                self.before_commit()
                db.execute("RELEASE tether_append" if joined else "COMMIT")
            except BaseException:
                if joined:
                    db.execute("ROLLBACK TO tether_append")
                    db.execute("RELEASE tether_append")
                elif db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        ids = iter(range(last - len(rows) + 1, last + 1) if rows else ())
        return [
            b.refused() if i in refused else [next(ids) for _ in range(len(b.rows) + len(b.tail))]
            for i, b in enumerate(batches)
        ]

    def close(self) -> None:
        """Give back the connection kept for writing."""
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
