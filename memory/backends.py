"""Which backend a store URL selects: the registry, and the one factory that reads it.

Adding a backend is one new module (a ``Backend`` subclass, ``memory/backend.py``) and
one line here.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tether.memory.errors import StoreUrlError

from .backend import Backend, redact
from .inmemory import InMemoryBackend
from .postgres import PostgresBackend
from .sqlite import SqliteBackend

DEFAULT_URL = "sqlite:///.tether/tether.db"
"""Where the store lives when neither ``--db`` nor ``TETHER_DB`` says otherwise."""

BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (SqliteBackend, PostgresBackend, InMemoryBackend)
}
"""Every backend, by the URL scheme that selects it."""


def _backend(raw: str) -> tuple[type[Backend], sa.URL]:
    try:
        parsed = make_url(raw)
    except sa.exc.ArgumentError as e:
        raise StoreUrlError(raw, "not a URL") from e
    found = BACKENDS.get(parsed.get_backend_name())
    if found is None:
        known = ", ".join(BACKENDS)
        raise StoreUrlError(
            redact(raw), f"unsupported backend {parsed.get_backend_name()!r} ({known})"
        )
    return found, parsed


def resolve_url(url: str | None) -> str:
    """The store URL to use: ``url``, else ``$TETHER_DB``, else the default SQLite file,
    as its backend normalises it (a relative SQLite path is made absolute here, once, so
    every process of a fleet opens the same file)."""
    raw = url or os.environ.get("TETHER_DB") or DEFAULT_URL
    backend, parsed = _backend(raw)
    return backend.resolve(parsed, raw)


def open_backend(url: str | None) -> Backend:
    """The backend for a store URL (resolved as ``resolve_url`` does); it opens no
    connection yet."""
    resolved = resolve_url(url)
    backend, _ = _backend(resolved)
    try:
        return backend(resolved)
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as e:
        raise StoreUrlError(redact(resolved), f"no database driver: {e}") from e
