"""Snapshots of folds: the state of a projection of a stream at a global position.

A long episode is folded once; later loads start from the snapshot and fold only what
came after it. Snapshots are a cache of what the events say, never a source of truth: one
that cannot be decoded, or that was written by another format version, is ignored, and
``drop`` throws snapshots away when the data they were derived from must go (erasure).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import Transcoder
from sqlalchemy.engine import Engine

from .recorder import writing

FORMAT = 5
"""Bump when a fold's state changes shape; older snapshots are then ignored."""


class Snapshots:
    """The latest snapshot per (stream, kind), in their own table."""

    def __init__(
        self, engine: Engine, transcoder: Transcoder, table_name: str = "tether_snapshots"
    ) -> None:
        self.engine = engine
        self.transcoder = transcoder
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            table_name,
            self.metadata,
            sa.Column("stream_id", sa.String(100), primary_key=True),
            sa.Column("kind", sa.String(50), primary_key=True),
            sa.Column("position", sa.BigInteger, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
        )

    def create_table(self) -> None:
        self.metadata.create_all(self.engine)

    def latest(self, stream_id: uuid.UUID, kind: str) -> dict[str, Any] | None:
        """The latest snapshot's state, or None if there is none that can be used."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.state).where(t.c.stream_id == str(stream_id), t.c.kind == kind)
            ).first()
        if row is None:
            return None
        try:
            state = self.transcoder.decode(bytes(row[0]))
        except Exception:
            return None  # a cache that cannot be read is a cache miss
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return None
        body = state.get("state")
        return body if isinstance(body, dict) else None

    def save(self, stream_id: uuid.UUID, kind: str, position: int, state: dict[str, Any]) -> None:
        """Replace the snapshot of (stream, kind) with ``state`` as of ``position``."""
        t = self.table
        blob = self.transcoder.encode({"format": FORMAT, "state": state})
        where = sa.and_(t.c.stream_id == str(stream_id), t.c.kind == kind)
        with writing(self.engine) as conn:
            conn.execute(sa.delete(t).where(where))
            conn.execute(
                sa.insert(t).values(
                    stream_id=str(stream_id), kind=kind, position=position, state=blob
                )
            )

    def drop(self, stream_id: uuid.UUID | None = None) -> int:
        """Delete the snapshots of one stream, or all of them; how many went."""
        t = self.table
        q = sa.delete(t)
        if stream_id is not None:
            q = q.where(t.c.stream_id == str(stream_id))
        with writing(self.engine) as conn:
            return conn.execute(q).rowcount
