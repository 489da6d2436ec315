"""eventsourcing's own recorder test cases, run against tether's SQLAlchemy recorder.

tether implements eventsourcing's ``ApplicationRecorder`` itself (see ``memory/recorder.py``),
so it must pass the contract eventsourcing holds its own recorders to, on every backend:
SQLite, PostgreSQL and the in-memory one. Subscriptions are optional in that contract and
not supported yet.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)

from tether.memory.backends import open_backend
from tether.memory.recorder import SqlRecorder

from .conftest import IN_CI, PG_URL, postgres_unavailable


class _OnSQLite:
    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.url = f"sqlite:///{Path(self._dir.name) / 'contract.db'}"
        self._recorders: list[SqlRecorder] = []

    def tearDown(self) -> None:
        _join_readers()
        for r in self._recorders:
            r.close()
            r.engine.dispose()
        self._dir.cleanup()

    def create_recorder(self) -> SqlRecorder:
        recorder = open_backend(self.url).recorder()
        recorder.create_table()
        self._recorders.append(recorder)
        return recorder


class _OnPostgres(_OnSQLite):
    def setUp(self) -> None:
        reason = postgres_unavailable()
        if reason is not None:
            if IN_CI:
                pytest.fail(f"{reason}; under CI=true the PostgreSQL tests must run")
            pytest.skip(reason)
        self.schema = f"c_{uuid.uuid4().hex[:12]}"
        self._admin = sa.create_engine(PG_URL)
        with self._admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {self.schema}"))
        self.url = f"{PG_URL}?options=-csearch_path%3D{self.schema}"
        self._recorders = []

    def tearDown(self) -> None:
        _join_readers()
        for r in self._recorders:
            r.engine.dispose()
        with self._admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {self.schema} CASCADE"))
        self._admin.dispose()


class _InMemory(_OnSQLite):
    def setUp(self) -> None:
        # A named store: the recorders a test creates share it, as they share a file.
        self.url = f"memory://contract-{uuid.uuid4().hex[:12]}"
        self._recorders = []

    def tearDown(self) -> None:
        _join_readers()
        for r in self._recorders:
            r.close()
        if self._recorders:
            self._recorders[0].engine.dispose()


def _join_readers() -> None:
    # eventsourcing's concurrency tests signal their reader threads to stop but do not join
    # them; wait until they have given their connections back before disposing of the pool.
    for thread in threading.enumerate():
        if "read_continuously" in thread.name:
            thread.join(timeout=30)


def _cases(base: Any, name: str) -> tuple[type, type, type]:
    sqlite_case = type(f"TestSQLite{name}", (_OnSQLite, base), {})
    pg_case = type(f"TestPostgres{name}", (_OnPostgres, base), {})
    memory_case = type(f"TestInMemory{name}", (_InMemory, base), {})
    return sqlite_case, pg_case, memory_case


# AggregateRecorderTestCase is not included: it is eventsourcing's contract for recorders
# of aggregates only (an empty insert returns None); its application recorders, like this
# one, return [] there and are held to ApplicationRecorderTestCase.
(
    TestSQLiteApplicationRecorder,
    TestPostgresApplicationRecorder,
    TestInMemoryApplicationRecorder,
) = _cases(ApplicationRecorderTestCase, "ApplicationRecorder")
TestSQLiteNonInterleaving, TestPostgresNonInterleaving, TestInMemoryNonInterleaving = _cases(
    NonInterleavingNotificationIDsBaseCase, "NonInterleaving"
)
