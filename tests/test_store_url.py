"""The store URL: a command that reads never creates a store, a command that starts a run
refuses another application's database unless told ``--init``, a read-only store is one
line, and SQLite URI options (``?mode=ro&uri=true``) are honoured."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store, resolve_url
from tether.memory.org import OrgMemory
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo

from .conftest import ONE_AGENT_FILE

EPISODE = "00000000-0000-0000-0000-00000000beef"

READS = [
    ["episodes"],
    ["replay", EPISODE],
    ["inbox", "list"],
    ["status"],
    ["audit", "verify"],
    ["facts", "customer:ada"],
]
"""Commands that only look at what a store holds."""

ACTS = [
    ["inbox", "approve", EPISODE],
    ["retain", "--ttl-days", "30"],
    ["forget", "customer:ada"],
    ["resume", EPISODE],
]
"""Commands that write, but only about what a store already recorded."""


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def one_error(*args: str) -> str:
    """Run a command that must fail with exactly one line and exit 1; that line."""
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def sqlite_tables(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [r[0] for r in rows]


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """Another application's SQLite file, alone in its directory: one table of its own."""
    path = tmp_path / "app" / "app.db"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()
    return path


@pytest.fixture
def demo_store(sqlite_url: str) -> Path:
    """A SQLite store holding one demo episode (run without Ray), waiting for approval."""
    with Store(sqlite_url) as store:
        clock, ids = StepClock(), SequentialIds(1)
        host = Host(demo.topology, store, clock, ids)
        RootSupervisor(demo.topology, store, LocalHost(host), clock, ids).start(
            demo.task, demo.context
        )
        OrgMemory(store)  # the facts read model exists, as after any run that recalls facts
    return Path(sqlite_url.removeprefix("sqlite:///"))


# --- a typo -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", READS + ACTS, ids=" ".join)
def test_a_typo_in_db_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    # The operator mistypes the store's directory and file name.
    typo = tmp_path / "tehter" / "tether.db"
    line = one_error(*command, "--db", f"sqlite:///{typo}")
    # One line says there is no store there and what to check ...
    assert line == f"error: no tether store at sqlite:///{typo} (no such file); check --db"
    # ... and nothing was made: no file, not even its directory.
    assert not typo.parent.exists()


# --- another application's database ------------------------------------------------------


@pytest.mark.parametrize("command", READS + ACTS, ids=" ".join)
def test_another_applications_database_is_left_as_it_was(app_db: Path, command: list[str]) -> None:
    before = app_db.read_bytes()
    # --db points at the application's file by mistake.
    line = one_error(*command, "--db", f"sqlite:///{app_db}")
    assert line == (
        f"error: no tether store at sqlite:///{app_db} (it holds 1 other table: users); check --db"
    )
    # Not a byte of it changed, and no journal or lock file appeared beside it.
    assert app_db.read_bytes() == before
    assert [p.name for p in app_db.parent.iterdir()] == ["app.db"]


def test_a_run_adds_tether_to_another_applications_database_only_with_init(
    app_db: Path, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.py"
    fleet.write_text(ONE_AGENT_FILE)
    url = f"sqlite:///{app_db}"
    before = app_db.read_bytes()
    # Pointed at the application's file, `run` refuses before it starts anything.
    line = one_error("run", str(fleet), "--db", url)
    assert line == (
        f"error: {url} holds 1 other table (users) and no tether store; check --db, "
        "or give --init to add tether's tables to it"
    )
    assert app_db.read_bytes() == before
    # The operator means it: with --init, tether's tables go in beside the application's.
    # (No cluster answers at the address, so the run stops there; the store comes first.)
    line = one_error("run", str(fleet), "--db", url, "--init", "--address", "127.0.0.1:1")
    assert "nothing answers at --address 127.0.0.1:1" in line
    tables = sqlite_tables(app_db)
    assert "users" in tables and "tether_events" in tables
    # From then on it is a tether store: reading it needs no flag.
    result = invoke("episodes", "--json", "--db", url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "[]"


def test_a_new_file_or_an_empty_one_becomes_a_store_without_init(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.py"
    fleet.write_text(ONE_AGENT_FILE)
    # A path that does not exist yet (the README's walkthrough), and a file someone
    # created empty: a run makes each a store (the run itself stops for want of a cluster).
    new = tmp_path / "new" / "tether.db"
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (new, empty):
        line = one_error("run", str(fleet), "--db", f"sqlite:///{path}", "--address", "127.0.0.1:1")
        assert "nothing answers at --address" in line
        assert "tether_events" in sqlite_tables(path)


# --- read-only stores and SQLite URI options ----------------------------------------------


def test_a_read_only_uri_is_honoured(
    demo_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = demo_store.read_bytes()
    monkeypatch.chdir(demo_store.parent)
    # An auditor opens the store read-only, the way SQLAlchemy spells SQLite URI options.
    url = f"sqlite:///file:{demo_store}?mode=ro&uri=true"
    result = invoke("episodes", "--json", "--db", url)
    assert result.exit_code == 0, result.output
    assert '"topology": "refund_desk"' in result.output
    # A relative path works too, from the directory the store is in ...
    relative = f"sqlite:///file:{demo_store.name}?mode=ro&uri=true"
    assert resolve_url(relative) == url
    result = invoke("replay", "--json", "--db", relative, str(_episode_id(demo_store)))
    assert result.exit_code == 0, result.output
    # ... and no file named after the options appeared, nor did the store change.
    assert not [p for p in tmp_path.rglob("*") if "mode=ro" in p.name or "file:" in p.name]
    assert demo_store.read_bytes() == before


def test_options_without_uri_true_are_honoured_too(tmp_path: Path) -> None:
    # `?mode=ro` alone would be dropped by the driver (with a warning): tether adds uri=true.
    assert resolve_url(f"sqlite:///{tmp_path / 'a.db'}?mode=ro") == (
        f"sqlite:///file:{tmp_path / 'a.db'}?mode=ro&uri=true"
    )


def test_retain_on_a_read_only_store_is_one_line(demo_store: Path) -> None:
    tables = sqlite_tables(demo_store)
    line = one_error(
        "retain", "--ttl-days", "1", "--db", f"sqlite:///file:{demo_store}?mode=ro&uri=true"
    )
    assert line.startswith(
        f"error: store sqlite:///file:{demo_store}?mode=ro&uri=true is read-only"
    )
    assert "mode=ro" in line.split("read-only", 1)[1]  # the fix names what to change
    assert sqlite_tables(demo_store) == tables


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a file of mode 0444")
def test_retain_on_a_store_file_nobody_may_write_is_one_line(demo_store: Path) -> None:
    demo_store.chmod(0o444)
    line = one_error("retain", "--ttl-days", "1", "--db", f"sqlite:///{demo_store}")
    assert "is read-only" in line


def _episode_id(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        [(stream,)] = conn.execute(
            "SELECT originator_id FROM tether_events WHERE originator_version = 1 "
            "AND topic LIKE '%EpisodeStarted'"
        ).fetchall()
    return str(stream)


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_tables(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


def test_an_empty_postgres_schema_is_no_store(postgres_url: str, pg_tables: sa.Engine) -> None:
    for command in READS + ACTS:
        line = one_error(*command, "--db", postgres_url)
        assert line.startswith("error: no tether store at postgresql://"), command
        assert line.endswith("(an empty database); check --db"), command
    assert sa.inspect(pg_tables).get_table_names() == []


def test_a_postgres_database_of_another_application_needs_init(
    postgres_url: str, pg_tables: sa.Engine, tmp_path: Path
) -> None:
    with pg_tables.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
    fleet = tmp_path / "fleet.py"
    fleet.write_text(ONE_AGENT_FILE)
    line = one_error("run", str(fleet), "--db", postgres_url)
    assert "holds 1 other table (users) and no tether store" in line
    assert sa.inspect(pg_tables).get_table_names() == ["users"]
    one_error("run", str(fleet), "--db", postgres_url, "--init", "--address", "127.0.0.1:1")
    assert "tether_events" in sa.inspect(pg_tables).get_table_names()
