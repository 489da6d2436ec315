"""Shared fixtures: stores on SQLite and PostgreSQL, and one Ray instance per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("TETHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

ONE_AGENT_FILE = (
    "from tether.agents import ScriptedModel, say\n"
    "from tether.topologies import Agent, Role, Supervisor, Topology\n"
    "topology = Topology('one', Supervisor('root', (Agent('a', Role('a'), "
    "ScriptedModel([say('hi')])),)))\n"
)
"""The smallest topology file: one agent that says hi."""


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as e:
        return f"PostgreSQL at {PG_URL} is not reachable ({type(e).__name__})"
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def offline_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a model over the network: only endpoints on this machine answer."""
    monkeypatch.setenv("TETHER_MODELS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def audit_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test signs its audit trail with its own key, never one in the working tree."""
    path = tmp_path / "keys" / "audit.key"
    monkeypatch.setenv("TETHER_AUDIT_KEY", str(path))
    return path


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = postgres_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true the PostgreSQL tests must run, not skip")
    pytest.skip(f"{reason}; start PostgreSQL (trust auth, database test) to run these")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tether.db'}"


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A fresh schema per test, so tests never see each other's events."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on both backends."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray, started once for the whole session by the first test that needs it."""
    import ray

    from tether.runtime.actor import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()
