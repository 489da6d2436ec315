"""What every command shares: its options, its one-line errors, and naming things by id."""

from __future__ import annotations

import functools
import getpass
import os
import shlex
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tether.memory.errors import ApprovalNotFound, EpisodeNotFound, TetherError
from tether.memory.events import ApprovalRequested, EpisodeStarted, EscalationRequested, Event
from tether.memory.store import Store
from tether.runtime._prefixes import resolve
from tether.runtime.cli._render import _esc, err

Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TETHER_DB",
        show_envvar=True,
        help="Store URL (SQLAlchemy form): sqlite:///path.db or postgresql://user@host/db.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Init = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Add tether's tables to a database that holds other tables (a new file or an "
        "empty database needs no --init).",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address", help="Join a running Ray cluster at this address instead of starting one."
    ),
]
Approver = Annotated[
    str | None, typer.Option("--as", help="Who decides (recorded); default: the current user.")
]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded).")]

F = TypeVar("F", bound=Callable[..., Any])


def handled(fn: F) -> F:
    """Turn tether's errors into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TetherError as e:
            lines = str(e).splitlines() or [type(e).__name__]
            err.print(f"[bold red]error:[/] {_esc(lines[0])}", markup=True)
            for line in lines[1:]:
                err.print(line, markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _prog() -> str:
    """How to call tether again: ``tether`` if that is on PATH, else the path used now."""
    used = sys.argv[0] if sys.argv else ""
    if Path(used).name != "tether":
        return "tether"
    found = shutil.which("tether")
    if found and Path(found).resolve() == Path(used).resolve():
        return "tether"
    return used


def _db_flag(db: str | None) -> str:
    """The ``--db`` part of a command we print for the user to run next."""
    if db is None or db == os.environ.get("TETHER_DB"):
        return ""
    return f" --db {shlex.quote(db)}"


def _ids_of(db: str | None, *types: type[Event]) -> Callable[[], list[uuid.UUID]]:
    """The ids of the streams that start with one of ``types``, read when asked."""

    def known() -> list[uuid.UUID]:
        with Store(db, mode="existing") as store:
            return [e.originator_id for _, e in store.of_type(*types)]

    return known


def _episode_id(given: str, db: str | None) -> uuid.UUID:
    """The episode a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "episode", _ids_of(db, EpisodeStarted), EpisodeNotFound)


def _approval_id(given: str, db: str | None) -> uuid.UUID:
    """The approval request a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "approval request", _ids_of(db, ApprovalRequested), ApprovalNotFound)


def _escalation_id(given: str, db: str | None) -> uuid.UUID:
    """The escalation a person named: its whole id, or a unique prefix of it."""

    return resolve(given, "escalation", _ids_of(db, EscalationRequested), ApprovalNotFound)


def _init(db: str | None, init: bool) -> None:
    """With --init, add tether's tables to the database first; the run then finds a store
    there (without it, the run refuses a database of other tables)."""
    if init:
        Store(db, mode="init").close()


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"
