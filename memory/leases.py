"""Episode leases: one runner per episode, fenced by a token the store checks on every append.

A runner (``tether run``, ``resume``, ``fork``, later the service) takes an episode's lease
before it records anything: who (owner, host, pid), until when, and a fencing token that
grows by one with each new owner. It renews the lease while any of the episode's work runs
and releases it when it stops. A second runner finds the lease held and runs nothing.

Every append a runner makes carries its token (``Fence``), and the recorder writes it only
if the token is still the episode's current one, inside the append's own transaction
(each backend's recorder checks it its own way: ``memory/backend.py``): a runner that lost
its lease (it was paused past its expiry and someone took over) can record nothing more,
whatever it believes. This is Kleppmann's fencing token; the lease's expiry only decides
when someone else may take over.

Leases use wall-clock time (``now``): they coordinate processes, and are not part of any
episode's recorded history.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from tether.memory.errors import EpisodeLeased, LeaseLost

from .backend import Backend
from .recorder import writing

DEFAULT_TTL_S = 30.0
"""How long a lease lasts without renewal."""

TABLE = "tether_leases"


@dataclass(frozen=True)
class Fence:
    """What an append carries to prove its writer still holds the episode's lease."""

    episode: str
    """The episode's id, as text."""
    token: int
    """The fencing token the writer was given when it took the lease."""


@dataclass(frozen=True)
class Lease:
    """Who runs an episode, until when, under which fencing token."""

    episode_id: uuid.UUID
    token: int
    owner: str
    """What runs it (``tether run``, ``tether resume``) and for whom."""
    host: str
    pid: int
    expires: float
    """Seconds since the epoch; renewed while the runner works."""
    released: bool = False
    """The runner stopped and let it go: anyone may take it now."""

    @property
    def fence(self) -> Fence:
        return Fence(str(self.episode_id), self.token)

    def expires_at(self) -> str:
        """Its expiry, for messages (local time of day, to the second)."""
        return datetime.fromtimestamp(self.expires, UTC).astimezone().strftime("%H:%M:%S")

    def holder(self) -> str:
        return f"pid {self.pid} on {self.host}"


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leases:
    """The episode leases of one store: one row per episode ever run."""

    def __init__(self, backend: Backend, now: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.engine = backend.engine
        self.now = now
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            TABLE,
            self.metadata,
            sa.Column("episode_id", sa.String(100), primary_key=True),
            sa.Column("token", sa.BigInteger, nullable=False),
            sa.Column("owner", sa.String(200), nullable=False),
            sa.Column("host", sa.String(200), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("expires", sa.Float, nullable=False),
            sa.Column("released", sa.Boolean, nullable=False, default=False),
        )

    def current(self, episode_id: uuid.UUID) -> Lease | None:
        """The episode's lease as it stands (None: it was never run under one)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.table).where(self.table.c.episode_id == str(episode_id))
            ).first()
        return None if row is None else _lease(row)

    def take(
        self,
        episode_id: uuid.UUID,
        owner: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        take_over: bool = False,
        host: str | None = None,
        pid: int | None = None,
    ) -> tuple[Lease, tuple[Lease, str] | None]:
        """Take the episode's lease with the next fencing token; return it, and the lease
        it took over from a runner that had not released it, with why it could (None: it
        was free).

        It is free when never taken, released, past its expiry, or held by a process of
        this host that no longer exists; ``take_over`` takes it whatever holds it.
        Otherwise ``EpisodeLeased`` names the holder and nothing changes.
        """
        host = host or this_host()
        pid = os.getpid() if pid is None else pid
        t = self.table
        key = str(episode_id)
        with writing(self.engine) as conn:
            conn.execute(self._insert_absent(key))
            row = conn.execute(sa.select(t).where(t.c.episode_id == key).with_for_update()).one()
            held = _lease(row)
            now = self.now()
            if held.released:
                why = None
            elif held.expires <= now:
                why = "its lease had expired"
            elif held.host == this_host() and not pid_alive(held.pid):
                why = f"its process (pid {held.pid}) is gone from {held.host}"
            elif take_over:
                why = "taken over by force (--take-over)"
            else:
                raise EpisodeLeased(held)
            lease = Lease(episode_id, held.token + 1, owner, host, pid, now + ttl_s)
            conn.execute(
                t.update()
                .where(t.c.episode_id == key)
                .values(
                    token=lease.token,
                    owner=owner,
                    host=host,
                    pid=pid,
                    expires=lease.expires,
                    released=False,
                )
            )
        return lease, None if why is None else (held, why)

    def _insert_absent(self, key: str) -> sa.Executable:
        values = {
            "episode_id": key,
            "token": 0,
            "owner": "",
            "host": "",
            "pid": 0,
            "expires": 0.0,
            "released": True,
        }
        return self.backend.insert_absent(self.table, values)

    def renew(self, lease: Lease, ttl_s: float = DEFAULT_TTL_S) -> Lease:
        """Push the lease's expiry out; ``LeaseLost`` if someone else holds it now."""
        t = self.table
        expires = self.now() + ttl_s
        with writing(self.engine) as conn:
            done = conn.execute(
                t.update()
                .where(t.c.episode_id == str(lease.episode_id), t.c.token == lease.token)
                .values(expires=expires)
            ).rowcount
        if done != 1:
            raise LeaseLost(str(lease.episode_id), lease.token, self.current(lease.episode_id))
        return Lease(lease.episode_id, lease.token, lease.owner, lease.host, lease.pid, expires)

    def release(self, lease: Lease) -> bool:
        """Let the lease go (if it is still ours): the next runner need not wait."""
        t = self.table
        with writing(self.engine) as conn:
            done = conn.execute(
                t.update()
                .where(t.c.episode_id == str(lease.episode_id), t.c.token == lease.token)
                .values(released=True, expires=self.now())
            ).rowcount
        return bool(done == 1)


def _lease(row: sa.Row[tuple[object, ...]]) -> Lease:
    m = row._mapping
    return Lease(
        uuid.UUID(str(m["episode_id"])),
        int(m["token"]),
        str(m["owner"]),
        str(m["host"]),
        int(m["pid"]),
        float(m["expires"]),
        bool(m["released"]),
    )
