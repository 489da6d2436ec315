"""The PostgreSQL backend: a store shared by every node and process of a fleet.

Appends take a table lock so that notification ids commit in the order they are taken
(as eventsourcing's own PostgreSQL recorder does), and a fenced append checks its lease
token in the same statement that inserts, so a stale writer costs no extra round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL, Engine, make_url

from .backend import Backend
from .recorder import COLUMNS, Batch, SqlRecorder, placed

MIGRATION_LOCK = 0x7E7E_5C4E
"""The advisory lock key that makes concurrent migrations of one database take turns."""


class PostgresBackend(Backend):
    """A PostgreSQL database (or a schema of one, through ``options=-csearch_path=...``)."""

    name: ClassVar[str] = "postgresql"
    placeholder: ClassVar[str] = "%s"

    @classmethod
    def resolve(cls, parsed: URL, raw: str) -> str:
        return parsed.render_as_string(hide_password=False)

    def create_engine(self) -> Engine:
        return sa.create_engine(make_url(self.url), pool_pre_ping=True)

    def tables(self) -> list[str]:
        return sa.inspect(self.engine).get_table_names()

    # SQLSTATE 25006 is read_only_sql_transaction (a replica, a read-only transaction).
    def refused_write(self, e: BaseException) -> bool:
        cause = getattr(e, "orig", None) or e
        return getattr(cause, "sqlstate", None) == "25006" or super().refused_write(e)

    def migration_lock(self, conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})

    def recorder(self, **options: Any) -> SqlRecorder:
        return PostgresRecorder(self.engine, **options)

    def insert_absent(self, table: sa.Table, values: Mapping[str, Any]) -> sa.Executable:
        return insert(table).values(**values).on_conflict_do_nothing()

    def scrub(self, tables: Sequence[str]) -> None:
        """``VACUUM FULL`` rewrites each table without its dead row versions (a plain
        VACUUM only marks their space reusable: the bytes would stay)."""
        self.engine.dispose()
        have = set(self.tables())
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in tables:
                if table in have:
                    conn.exec_driver_sql(f"VACUUM FULL {table}")
        self.engine.dispose()


class PostgresRecorder(SqlRecorder):
    """The recorder on PostgreSQL: ``INSERT ... RETURNING`` under a table lock."""

    placeholder: ClassVar[str] = "%s"

    def __init__(self, engine: Engine, **options: Any) -> None:
        super().__init__(engine, **options)
        # The fenced insert runs on the driver's own cursor: its errors come as the
        # driver's, not SQLAlchemy's.
        driver = engine.dialect.loaded_dbapi
        self.integrity_errors = (driver.IntegrityError, sa.exc.IntegrityError)
        self.operational_errors = (driver.OperationalError, sa.exc.OperationalError)
        t = self.table
        self._insert = t.insert().returning(t.c.id, sort_by_parameter_order=True)
        self._lock = sa.text(f"LOCK TABLE {t.name} IN EXCLUSIVE MODE")
        # One statement: the leases the fenced rows name that still hold their tokens, and
        # the rows inserted because theirs do (or because they carry no fence).
        self._fenced_insert = (
            f"WITH ok AS (SELECT l.episode_id, l.token FROM {self.leases} l "
            "JOIN unnest(%s::varchar[], %s::bigint[]) AS f(e, t) "
            "ON l.episode_id = f.e AND l.token = f.t), "
            f"ins AS (INSERT INTO {t.name} "
            "(originator_id, originator_version, topic, state, catalog) "
            "SELECT r.o, r.v, r.t, r.s, r.c FROM unnest("
            "%s::varchar[], %s::int[], %s::varchar[], %s::bytea[], %s::varchar[], "
            "%s::varchar[], %s::bigint[]) WITH ORDINALITY AS r(o, v, t, s, c, fe, ft, n) "
            "WHERE r.fe IS NULL OR EXISTS (SELECT 1 FROM ok "
            "WHERE ok.episode_id = r.fe AND ok.token = r.ft) "
            "ORDER BY r.n RETURNING id, originator_id, originator_version) "
            "SELECT id, originator_id, originator_version FROM ins "
            "UNION ALL SELECT NULL, episode_id, token FROM ok"
        )

    def _write_batches(self, batches: list[Batch]) -> list[list[int] | BaseException]:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(self._lock)  # notification ids commit in the order they are taken
            rows = placed(
                batches,
                lambda stream: conn.execute(
                    sa.select(sa.func.max(t.c.originator_version)).where(
                        t.c.originator_id == stream
                    )
                ).scalar(),
            )
            if not any(b.fence for b in batches):
                keyed = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                ids = iter([row[0] for row in conn.execute(self._insert, keyed)])
                self._write_audit(conn.connection.cursor(), batches)
                self.before_commit()
                return [[next(ids) for _ in range(len(b.rows) + len(b.tail))] for b in batches]
            # Fenced: one statement inserts the rows whose writer's token is still the
            # episode's current one, so a stale writer costs no extra round trip.
            fenced = {b.fence for b in batches if b.fence is not None}
            fences = [b.fence for b in batches for _ in range(len(b.rows) + len(b.tail))]
            cursor = conn.connection.cursor()
            cursor.execute(
                self._fenced_insert,
                (
                    [f.episode for f in fenced],
                    [f.token for f in fenced],
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                    [r[3] for r in rows],
                    [r[4] for r in rows],
                    [f.episode if f else None for f in fences],
                    [f.token if f else None for f in fences],
                ),
            )
            written: dict[tuple[str, int], int] = {}
            held: set[tuple[str, int]] = set()
            for i, o, v in cursor.fetchall():
                if i is None:
                    held.add((str(o), int(v)))
                else:
                    written[(str(o), int(v))] = int(i)
            out: list[list[int] | BaseException] = []
            accepted: list[Batch] = []
            at = 0
            for b in batches:
                mine = rows[at : at + len(b.rows) + len(b.tail)]
                at += len(mine)
                if b.fence is not None and (b.fence.episode, b.fence.token) not in held:
                    out.append(b.refused())
                    continue
                accepted.append(b)
                out.append([written[(r[0], r[1])] for r in mine])
            self._write_audit(cursor, accepted)
            self.before_commit()
        return out
