"""Forgetting, explicit and recorded: erasure of a data subject by crypto-shredding.

``erase_subject`` destroys the subject's key, so every field sealed under it (in episodes
about the subject, in facts about the subject) reads as erased from then on; the event
log itself stays append-only. What was derived from the plaintext is thrown away and
rebuilt — the org-memory read model, timeline snapshots — and the database is made to
forget the bytes too: SQLite zeroes freed pages (``secure_delete``), is vacuumed and its
write-ahead log truncated; PostgreSQL's touched tables are ``VACUUM FULL``-ed. A
``SubjectErased`` receipt records who asked, why, and what was affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether.runtime.errors import NotFound

from .events import Event, SubjectErased, erasure_stream_id
from .org import OrgMemory
from .sources import Clock
from .store import Store


@dataclass(frozen=True)
class ErasureReceipt:
    """What an erasure did."""

    subject: str
    sealed_events: int
    facts: int
    rebuilt: list[str]
    receipt: SubjectErased


def _sealed_under(store: Store, subject: str) -> int:
    """Events holding fields sealed under the subject's key (counted without decrypting)."""
    t = store.recorder.table
    marker = f'"s":"{subject}"'
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.state).where(t.c.state.is_not(None))).all()
    return sum(1 for (state,) in rows if marker.encode() in bytes(state))


def erase_subject(
    store: Store, subject: str, *, requested_by: str, reason: str, clock: Clock
) -> ErasureReceipt:
    """Erase a data subject; ``NotFound`` if tether holds nothing about them."""
    org = OrgMemory(store)
    facts = len(org.about(subject, history=True))
    sealed = _sealed_under(store, subject)
    if store.keys.get(subject) is None and not facts and not sealed:
        raise NotFound(
            f"no data about subject {subject!r}: no key, no facts, no sealed "
            "events; `tether facts --search WORD` finds subjects"
        )
    store.keys.destroy(subject)
    rebuilt = [
        f"org facts read model ({org.rebuild()} events folded again)",
        f"timeline snapshots ({store.snapshots.drop()} dropped; rebuilt on next load)",
    ]
    receipt_events = store.read(erasure_stream_id(subject))
    receipt: Event = SubjectErased(
        originator_id=erasure_stream_id(subject),
        originator_version=len(receipt_events) + 1,
        at=clock.now(),
        subject=subject,
        requested_by=requested_by,
        reason=reason,
        sealed_events=sealed,
        facts=facts,
        rebuilt=rebuilt,
    )
    store.append([receipt])
    scrub(store)
    assert isinstance(receipt, SubjectErased)
    return ErasureReceipt(subject, sealed, facts, rebuilt, receipt)


def scrub(store: Store) -> None:
    """Make the database forget deleted bytes: free pages, old row versions, the WAL."""
    store.recorder.close()  # the writer connection must not hold the file open
    store.engine.dispose()
    if store.engine.dialect.name == "sqlite":
        raw = store.engine.raw_connection()  # the driver's own: VACUUM runs outside a txn
        try:
            db: Any = raw.driver_connection
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        store.engine.dispose()
        return
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in (
            "tether_facts",
            "tether_fact_conflicts",
            "tether_snapshots",
            "tether_subject_keys",
        ):
            conn.exec_driver_sql(f"VACUUM FULL {table}")
    store.engine.dispose()
