"""Schema versions: the migrations make the tables the code reads, a store made before
versions opens as it is and is stamped on request, an older one is refused until
``tether db upgrade``, and a newer tether's store is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import Result
from typer.testing import CliRunner

from tether.memory import Store
from tether.memory._codec import new_mapper
from tether.memory._keys import SubjectKeys
from tether.memory._snapshots import Snapshots
from tether.memory.audit import AuditTrail
from tether.memory.backends import open_backend
from tether.memory.errors import StoreOutdated, StoreTooNew
from tether.memory.events import TaskAssigned
from tether.memory.leases import Leases
from tether.memory.schema import BASELINE, BASELINE_TABLES, HEAD, VERSION_TABLE, revisions
from tether.memory.store import new_event
from tether.runtime.cli import app

from .test_store import AT


def _task(stream: uuid.UUID) -> TaskAssigned:
    return new_event(
        TaskAssigned, stream, 1, AT, episode_id=stream, agent="a", task={}, by="operator"
    )


def _store_metadata(store: Store) -> sa.MetaData:
    """Every table the store's code reads and writes, as its code declares them."""
    together = sa.MetaData()
    for part in (store.recorder, store.audit, store.snapshots, store.keys, store.leases):
        for table in part.metadata.tables.values():
            table.to_metadata(together)
    return together


def _made_before_versions(url: str, *, without: tuple[str, ...] = ()) -> None:
    """A store as tether made it before schema versions: each part created its own
    tables (``metadata.create_all``), and no version table. ``without``: tables an even
    older tether did not have yet."""
    backend = open_backend(url)
    engine = backend.engine
    keys = SubjectKeys(engine)
    parts = (
        backend.recorder(),
        AuditTrail(engine),
        Snapshots(engine, new_mapper(keys).transcoder),
        keys,
        Leases(backend),
    )
    for part in parts:
        for table in part.metadata.tables.values():
            if table.name not in without:
                table.create(engine)
    backend.close()


def _tables(url: str) -> list[str]:
    backend = open_backend(url)
    try:
        return sorted(backend.tables() or ())
    finally:
        backend.close()


def _revision(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    finally:
        engine.dispose()


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def one_line(*args: str, exit_code: int) -> str:
    result = invoke(*args)
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# --- the migrations and the code agree ---------------------------------------------------


def test_head_is_the_newest_shipped_migration() -> None:
    # A migration added without moving HEAD (or the other way round) fails here first.
    assert revisions()[0] == BASELINE
    assert revisions()[-1] == HEAD


@pytest.mark.parametrize("url", ["sqlite_url", "postgres_url", "memory"])
def test_a_new_store_has_exactly_the_tables_its_code_declares(
    url: str, request: pytest.FixtureRequest
) -> None:
    resolved = "memory://" if url == "memory" else str(request.getfixturevalue(url))
    with Store(resolved) as store:
        with store.engine.connect() as conn:
            # Alembic's own comparison: no table, column, type, index or constraint differs.
            differences = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}),
                _store_metadata(store),
            )
            assert [d for d in differences if d[0] != "remove_table"] == []
            assert sorted(sa.inspect(conn).get_table_names()) == sorted(
                [*BASELINE_TABLES, VERSION_TABLE]
            )
            [version] = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            assert version == (HEAD,)


# --- a store made before schema versions ------------------------------------------------


def test_a_store_made_before_versions_opens_unchanged_and_upgrade_stamps_it(
    store_url: str,
) -> None:
    # A fleet ran on a tether without schema versions; its store holds an event.
    _made_before_versions(store_url)
    stream = uuid.uuid4()
    with Store(store_url, mode="existing") as store:
        store.append([_task(stream)])
    # Opening it (and writing events) changed nothing in its schema: no version table.
    assert VERSION_TABLE not in _tables(store_url)
    # The operator asks for the upgrade: it is stamped with the baseline, nothing else.
    line = one_line("db", "upgrade", "--db", store_url, exit_code=0)
    assert f"stamped schema revision {BASELINE} (it was made before schema versions)" in line
    assert "adding" not in line
    assert _revision(store_url) == [HEAD]
    assert _tables(store_url) == sorted([*BASELINE_TABLES, VERSION_TABLE])
    with Store(store_url, mode="existing") as store:
        assert store.read(stream) == [_task(stream)]
    # Asked again, there is nothing to do.
    line = one_line("db", "upgrade", "--db", store_url, exit_code=0)
    assert line.endswith(f"is at schema revision {HEAD}: nothing to do")


def test_a_store_older_than_the_baseline_is_refused_until_upgraded(store_url: str) -> None:
    # A store from before episode leases existed: everything but tether_leases.
    _made_before_versions(store_url, without=("tether_leases",))
    with pytest.raises(StoreOutdated) as caught:
        Store(store_url, mode="existing")
    assert "no table tether_leases" in str(caught.value)
    assert "tether db upgrade --db" in str(caught.value)
    # Any command says so in one line, and changes nothing.
    line = one_line("episodes", "--db", store_url, exit_code=1)
    assert line.startswith("error: store ")
    assert "'tether db upgrade --db " in line
    assert "tether_leases" not in _tables(store_url)
    # The upgrade adds what it lacks and stamps it; from then on it opens.
    line = one_line("db", "upgrade", "--db", store_url, exit_code=0)
    assert "stamped schema revision" in line and "adding tether_leases" in line
    assert _revision(store_url) == [HEAD]
    with Store(store_url, mode="existing") as store:
        lease, _ = store.leases.take(uuid.uuid4(), "run")
        assert lease.token == 1


def test_a_store_a_newer_tether_made_is_refused(store_url: str) -> None:
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreTooNew) as caught:
        Store(store_url)
    assert "revision 9999, made by a newer tether" in str(caught.value)
    # The upgrade refuses it too, and leaves it as it was.
    line = one_line("db", "upgrade", "--db", store_url, exit_code=1)
    assert "made by a newer tether" in line and "upgrade tether to open it" in line
    assert _revision(store_url) == ["9999"]


def test_db_upgrade_where_there_is_no_store_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "tehter" / "tether.db"
    line = one_line("db", "upgrade", "--db", f"sqlite:///{typo}", exit_code=1)
    assert line == f"error: no tether store at sqlite:///{typo} (no such file); check --db"
    assert not typo.parent.exists()
