"""The store's backend interface: everything that differs from one database to another.

The rest of ``memory/`` speaks SQLAlchemy Core and eventsourcing's recorder contract and
never asks which database it runs on. What does differ lives in one module per backend
(``sqlite.py``, ``postgres.py``, ``inmemory.py``), each a ``Backend`` subclass registered
under its URL scheme in ``backends.py``, the one factory:

- the URL: how it is normalised, and what it names (a file, a server, a process's memory);
- the engine and its tuning (pragmas, pool), and what a write transaction begins with;
- what the database holds (its table list), and how room is made for a new store;
- the upsert (insert-if-absent) and the DB-API placeholder;
- the recorder's insert, each database's fastest correct route, including the fenced
  insert that checks an episode lease's token in the append's own transaction (SQLite: in
  this process under the write lock; PostgreSQL: in one statement);
- the scrub after an erasure (VACUUM, ``secure_delete``, ``VACUUM FULL``);
- the lock that makes concurrent schema migrations take turns.

It is also where the next primitives go, one implementation per backend: atomic budget
reservations (a conditional update under the write lock on SQLite, one statement on
PostgreSQL) and a durable work queue (``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL; the write lock already serialises claims on SQLite).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from tether.memory.errors import StoreReadOnly, StoreUnavailable

if TYPE_CHECKING:
    from .recorder import SqlRecorder


class Backend(ABC):
    """One database behind a store: its engine, and what only it knows how to do."""

    name: ClassVar[str]
    """The URL scheme that selects it (SQLAlchemy's backend name: ``sqlite``)."""
    placeholder: ClassVar[str]
    """The DB-API parameter mark of its driver (``?`` or ``%s``)."""
    process_local: ClassVar[bool] = False
    """Its data lives in this process: other processes (Ray host actors) cannot open it."""

    def __init__(self, url: str) -> None:
        """``url``: as ``resolve`` returned it."""
        self.url = url
        self.engine = self.create_engine()
        _name_read_only(self.engine, self)

    # --- the URL and the engine ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def resolve(cls, parsed: URL, raw: str) -> str:
        """The URL every process of a fleet opens the same store by (``StoreUrlError``
        if it cannot name a store)."""

    @abstractmethod
    def create_engine(self) -> Engine:
        """The engine, tuned; it creates nothing until a connection is made."""

    @property
    def redacted(self) -> str:
        """The URL without its password, for messages."""
        return redact(self.url)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # --- what is there -------------------------------------------------------------------

    @abstractmethod
    def tables(self) -> list[str] | None:
        """The tables of the database; None if there is no database yet (no file). It
        changes nothing, not even a setting, in a database that is not a store."""

    @property
    def read_only(self) -> bool:
        """Opened so that nothing can be created or written (SQLite's ``mode=ro``)."""
        return False

    @property
    def read_only_fix(self) -> str:
        """What to change when the database refuses a write."""
        return "give a --db you may write to (not a read-only replica or transaction)"

    def refused_write(self, e: BaseException) -> bool:
        """Whether ``e`` is the database refusing a write because it may only be read."""
        text = str(getattr(e, "orig", None) or e)
        return "readonly database" in text or "read-only transaction" in text

    def unavailable(self, e: BaseException) -> StoreUnavailable:
        """The error for a database that failed: ``StoreReadOnly`` if it refused a write."""
        if self.refused_write(e):
            return StoreReadOnly(self.redacted, first_line(e), self.read_only_fix)
        return StoreUnavailable(self.redacted, first_line(e))

    def prepare(self) -> None:
        """Make room for a new store (a SQLite file's directory)."""
        return None  # a server's database needs none

    def migration_lock(self, conn: sa.Connection) -> None:
        """Make schema migrations of the same store take turns, inside ``conn``'s
        transaction (SQLite's write lock already does)."""
        return None  # a backend with one writer at a time needs none

    # --- writing -------------------------------------------------------------------------

    @abstractmethod
    def recorder(self, **options: Any) -> SqlRecorder:
        """The event recorder for this database (options: ``SqlRecorder``'s)."""

    @abstractmethod
    def insert_absent(self, table: sa.Table, values: Mapping[str, Any]) -> sa.Executable:
        """Insert a row unless one with its primary key exists (an upsert that does nothing)."""

    @abstractmethod
    def scrub(self, tables: Sequence[str]) -> None:
        """Make the database forget the bytes of deleted rows of ``tables`` (free pages,
        old row versions, the write-ahead log). The caller gave back its connections."""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def first_line(e: BaseException) -> str:
    """The first line of an error's message (the driver's, when SQLAlchemy wraps one)."""
    text = str(getattr(e, "orig", None) or e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _name_read_only(engine: Engine, backend: Backend) -> None:
    # A write the database refuses as read-only, wherever it is made (a read model, a key,
    # a snapshot), is one StoreReadOnly naming the fix, not the driver's traceback.
    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        if backend.refused_write(context.original_exception):
            raise StoreReadOnly(
                backend.redacted, first_line(context.original_exception), backend.read_only_fix
            )
