"""Holding an episode's lease while its work runs: taken before anything is recorded,
renewed by a background thread (a long tool call included), released at the end.

The lease itself, its fencing token and the store's check live in ``memory/leases.py``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

from tether.memory.errors import LeaseLost
from tether.memory.leases import DEFAULT_TTL_S, Lease, Leases
from tether.memory.store import Fencing

log = logging.getLogger("tether.lease")


class Held:
    """An episode's lease, kept alive while the runner works (a context manager)."""

    def __init__(
        self,
        leases: Leases,
        lease: Lease,
        previous: tuple[Lease, str] | None,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.leases = leases
        self.lease = lease
        self.previous = previous
        """The lease taken over from a runner that had not released it, and why it could
        be (None: it was free)."""
        self.ttl_s = ttl_s
        self.fencing = Fencing(lease.episode_id, lease.token)
        """What the runner's journals carry on every append."""
        self.lost: LeaseLost | None = None
        """Set when a renewal found the lease taken over: this runner records nothing more."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"tether-lease-{lease.episode_id}", daemon=True
        )

    @property
    def episode_id(self) -> uuid.UUID:
        return self.lease.episode_id

    @property
    def token(self) -> int:
        return self.lease.token

    def _renew(self) -> None:
        # Renew at a sixth of the lease's life: two renewals may fail (a busy database)
        # before another runner may take the episode over.
        while not self._stop.wait(self.ttl_s / 6):
            try:
                self.lease = self.leases.renew(self.lease, self.ttl_s)
            except LeaseLost as e:
                self.lost = e
                log.warning("%s", e)
                return
            except Exception as e:  # the database is busy or away: try again next period
                log.warning("renewing the lease of episode %s failed: %s", self.episode_id, e)

    def __enter__(self) -> Held:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self.lost is None:
            try:
                self.leases.release(self.lease)
            except Exception as e:  # expiry frees it anyway
                log.warning("releasing the lease of episode %s failed: %s", self.episode_id, e)
