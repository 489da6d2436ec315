"""Schema versions: the store's tables are made and changed by Alembic migrations.

The migrations ship inside the package (``memory/migrations``: ``env.py`` and one module
per revision under ``versions/``) and run programmatically, on the store's own
connection; users need no ``alembic.ini``. The store's revision is kept in its own table,
``tether_schema`` (not ``alembic_version``: a database tether shares with an application,
``--init``, may hold that application's).

Opening a store (``Store``) never changes its schema, but for a brand-new store, which it
creates at the newest revision. Any other store must be at this tether's revision
(``HEAD``): an older one is refused with one line naming ``tether db upgrade``, which
upgrades it (``upgrade``); one at a revision this tether does not know was made by a
newer tether and is refused. A store made before schema versions (tether's tables, no
``tether_schema``) counts as the baseline revision when it has all of the baseline's
tables: opening it leaves it as it is (unversioned); ``tether db upgrade`` stamps it. One
that lacks some of them is older than the baseline: refused until upgraded, which adds
what it lacks.

Adding a migration: a module in ``versions/`` whose ``down_revision`` is the current
head, and ``HEAD`` set to its revision (a test checks they agree). To have Alembic write
the module's skeleton: ``alembic.command.revision(schema.config(), "what changes",
rev_id="0002")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tether.memory.errors import StoreMissing, StoreOutdated, StoreTooNew

from .backend import Backend
from .backends import open_backend
from .recorder import writing

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions that change a schema (~0.4 s with SQLAlchemy's
# own modules loaded): opening a store, which only reads its revision, never pays it.

VERSION_TABLE = "tether_schema"
"""Where a store keeps its schema revision (Alembic's version table)."""

BASELINE = "0001"
"""The first revision: the schema tether made before schema versions."""
BASELINE_TABLES = (
    "tether_events",
    "tether_audit",
    "tether_snapshots",
    "tether_subject_keys",
    "tether_leases",
)
"""What the baseline revision creates."""

HEAD = "0001"
"""The revision this tether reads and writes."""

MIGRATIONS = Path(__file__).parent / "migrations"


def config() -> Config:
    """Alembic's configuration for tether's migrations (no ``alembic.ini``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def revisions() -> list[str]:
    """Every revision the shipped migrations know, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def revision(backend: Backend, tables: list[str]) -> str | None:
    """The revision recorded in the store; None for a store made before schema versions."""
    if VERSION_TABLE not in tables:
        return None
    with backend.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return ",".join(sorted(found)) or None


def check(backend: Backend, tables: list[str]) -> None:
    """Refuse a store whose schema is not this tether's: ``StoreOutdated`` (an older one,
    upgraded by ``tether db upgrade``) or ``StoreTooNew`` (a newer tether's)."""
    current = revision(backend, tables)
    if current == HEAD:
        return
    if current is None:
        lacking = [t for t in BASELINE_TABLES if t not in tables]
        if not lacking and HEAD == BASELINE:
            return  # the baseline, unversioned: left as it is until `tether db upgrade`
        found = "from before schema versions" + (
            f" (no table {', '.join(lacking)})" if lacking else f" (revision {BASELINE})"
        )
        raise StoreOutdated(backend.redacted, found, f"revision {HEAD}")
    if current in revisions():
        raise StoreOutdated(backend.redacted, f"revision {current}", f"revision {HEAD}")
    raise StoreTooNew(backend.redacted, f"revision {current}", f"revision {HEAD}")


def create(backend: Backend) -> None:
    """Make a new store's tables: every migration, in one transaction."""
    _migrate(backend)


def _migrate(backend: Backend) -> None:
    from alembic import command

    cfg = config()
    with writing(backend.engine) as conn:
        backend.migration_lock(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def upgrade(url: str | None) -> str:
    """Bring the store at ``url`` to this tether's schema; say what was done.

    ``StoreMissing`` where there is no tether store (a typo creates nothing);
    ``StoreTooNew`` for a store a newer tether made (nothing is changed)."""
    backend = open_backend(url)
    try:
        return _upgrade(backend)
    except (sa.exc.SQLAlchemyError, OSError) as e:
        raise backend.unavailable(e) from e
    finally:
        backend.close()


def _upgrade(backend: Backend) -> str:
    """``upgrade`` on an open backend."""
    tables = backend.tables()
    ours = {*BASELINE_TABLES, VERSION_TABLE}
    if tables is None or ours.isdisjoint(tables):
        raise StoreMissing(backend.redacted, None if tables is None else sorted(tables))
    before = revision(backend, tables)
    if before is not None and before != HEAD and before not in revisions():
        raise StoreTooNew(backend.redacted, f"revision {before}", f"revision {HEAD}")
    if before == HEAD:
        return f"store {backend.redacted} is at schema revision {HEAD}: nothing to do"
    _migrate(backend)
    added = sorted(set(backend.tables() or ()) - set(tables) - {VERSION_TABLE})
    if before is None:
        did = f"stamped schema revision {BASELINE} (it was made before schema versions)"
        if added:
            did += f", adding {', '.join(added)}"
        if HEAD != BASELINE:
            did += f"; upgraded it to revision {HEAD}"
    else:
        did = f"upgraded schema revision {before} to {HEAD}"
    return f"store {backend.redacted}: {did}"
