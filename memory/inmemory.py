"""The in-memory backend (``memory://``): a store that lives in this process, for tests,
``LocalHost`` runs and notebooks.

An honest, simple choice rather than a second implementation: SQLite's in-memory
database behind one shared connection, so it runs the very SQL the file backend runs and
passes the same conformance suite, keeps nothing on disk, and is gone with the process.
``memory://`` is a fresh store for each ``Store`` that opens it, gone when that store
closes; ``memory://NAME`` is one store per name that every ``Store`` of this process
opening the name shares, until the process ends.

Ray host actors are other processes and cannot reach it: ``Backend.process_local``
makes launching them on such a store one clear error.

The one connection is taken by one thread at a time, from checkout to checkin. A thread
that checks it out again while it holds it (a read inside a write transaction) joins
the transaction it has open, through a savepoint: its commit or rollback ends only
what it began, never the outer transaction. (SQLAlchemy's ``StaticPool`` shares one
connection too, but tells of only one checkin when a thread nests two checkouts; each
checkout here is a pool record of its own around the one connection, so every checkin
is seen.)
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from tether.memory.errors import StoreUrlError

from .backend import redact
from .recorder import SqlRecorder
from .sqlite import SqliteBackend, SqliteRecorder

_NAMED: dict[str, Engine] = {}
"""The engines of the in-memory stores of this process, by name."""
_ANONYMOUS = "anonymous-"
"""How the name of a store opened as plain ``memory://`` begins."""
_NAMED_LOCK = threading.Lock()


class _OneConnection(sqlite3.Connection):
    """The shared connection: it knows how deep the holding thread's checkouts go, and
    ends a transaction only at the depth that began it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.isolation_level = None  # transactions are begun by ``begin``, explicitly
        self.execute("PRAGMA secure_delete=ON")  # as on a file: freed pages are zeroed
        self.lock = threading.RLock()
        self.depth = 0
        """Checkouts held by the thread that holds ``lock``."""
        self.began: dict[int, str] = {}
        """What each depth began: "" the transaction itself, else a savepoint's name."""
        self.functions: set[str] = set()

    def begin(self, immediate: bool) -> None:
        if self.in_transaction:
            name = f"tether_{self.depth}"
            self.execute(f"SAVEPOINT {name}")
            self.began[self.depth] = name
        else:
            self.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self.began[self.depth] = ""

    def _end(self, end: Callable[[], None], savepoint: str) -> None:
        began = self.began.pop(self.depth, None)
        if began:
            for sql in savepoint.format(name=began).split(";"):
                self.execute(sql)
        elif began == "" or self.depth <= 1:
            end()
        # Otherwise the transaction is an outer checkout's: it ends there.

    def commit(self) -> None:
        self._end(super().commit, "RELEASE {name}")

    def rollback(self) -> None:
        self._end(super().rollback, "ROLLBACK TO {name};RELEASE {name}")

    def create_function(self, name: str, *args: Any, **kwargs: Any) -> None:
        # SQLAlchemy registers its functions on every checkout (each is a new connection
        # to it); once is enough, and SQLite refuses it while a statement is running.
        if name not in self.functions:
            super().create_function(name, *args, **kwargs)
            self.functions.add(name)

    def take(self) -> _OneConnection:
        """A checkout begins: wait until no other thread holds the connection."""
        self.lock.acquire()
        self.depth += 1
        return self

    def give_back(self) -> None:
        self.depth -= 1
        self.lock.release()

    def close(self) -> None:
        """A checkout ends, not the database (``discard`` ends it)."""

    def discard(self) -> None:
        super().close()


class InMemoryBackend(SqliteBackend):
    """SQLite's in-memory database, in this process only."""

    name: ClassVar[str] = "memory"
    process_local: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self.database = sa.engine.make_url(url).host or ""
        """The store's name (``anonymous-...`` for one opened as ``memory://``)."""
        super().__init__(url)

    @classmethod
    def resolve(cls, parsed: URL, raw: str) -> str:
        if parsed.database or parsed.port or parsed.username or parsed.query:
            raise StoreUrlError(
                redact(raw), "an in-memory store is named memory:// or memory://NAME, nothing more"
            )
        # An anonymous store is its opener's alone: the URL gets a name nobody else has,
        # so the Store's url (which others are handed) still names this very store.
        return f"memory://{parsed.host or _ANONYMOUS + uuid.uuid4().hex[:12]}"

    def create_engine(self) -> Engine:
        with _NAMED_LOCK:
            engine = _NAMED.get(self.database)
            if engine is None:
                one = sqlite3.connect(":memory:", factory=_OneConnection, check_same_thread=False)
                engine = sa.create_engine("sqlite://", poolclass=NullPool, creator=one.take)
                _take_turns(engine)
                _NAMED[self.database] = engine
            return engine

    @property
    def redacted(self) -> str:
        """The URL as it was given (an anonymous store's name is nobody's business)."""
        return "memory://" if self.database.startswith(_ANONYMOUS) else self.url

    def tables(self) -> list[str]:
        return sa.inspect(self.engine).get_table_names()

    def prepare(self) -> None:
        pass

    def recorder(self, **options: Any) -> SqlRecorder:
        return SqliteRecorder(self.engine, hold_writer=False, **options)

    def scrub(self, tables: Sequence[str]) -> None:
        """VACUUM the database, so freed pages hold no copy (the process's memory is all
        there is to scrub)."""
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
        finally:
            raw.close()

    def close(self) -> None:
        if self.database.startswith(_ANONYMOUS):
            with _NAMED_LOCK:
                _NAMED.pop(self.database, None)
            _discard(self.engine)  # its data goes with it


def _discard(engine: Engine) -> None:
    raw = engine.raw_connection()
    db = raw.driver_connection
    raw.close()
    assert isinstance(db, _OneConnection)
    db.discard()


def _take_turns(engine: Engine) -> None:
    # Each checkout is a pool record of its own, made by ``_OneConnection.take``.
    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: _OneConnection | None, _record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.give_back()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        db = conn.connection.driver_connection
        assert isinstance(db, _OneConnection)
        db.begin(conn.get_execution_options().get("tether_immediate", False))
