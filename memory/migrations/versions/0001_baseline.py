"""The baseline: the store's tables as tether made them before schema versions.

Revision ID: 0001
Revises: (none)

A store made before schema versions holds all or some of these tables already (tables
were added as tether grew: the leases last). Each is created only where it is missing,
so upgrading such a store adds what it lacks and stamps it with this revision; an events
table of another shape is refused before anything changes.
"""

import sqlalchemy as sa
from alembic import op

from tether.memory.errors import StoreFormatError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_EVENT_COLUMNS = ("id", "originator_id", "originator_version", "topic", "state", "catalog")


def upgrade() -> None:
    found = sa.inspect(op.get_bind())
    have = set(found.get_table_names())
    if "tether_events" in have:
        columns = {c["name"] for c in found.get_columns("tether_events")}
        if columns != set(_EVENT_COLUMNS):
            missing = sorted(set(_EVENT_COLUMNS) - columns)
            raise StoreFormatError("tether_events", missing, sorted(columns - set(_EVENT_COLUMNS)))
    else:
        op.create_table(
            "tether_events",
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("originator_id", sa.String(100), nullable=False),
            sa.Column("originator_version", sa.Integer, nullable=False),
            sa.Column("topic", sa.String(200), nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("catalog", sa.String(200), nullable=True),
            sa.UniqueConstraint("originator_id", "originator_version", name="tether_events_uq"),
        )
        op.create_index(
            "tether_events_catalog_ix",
            "tether_events",
            ["catalog", "id"],
            sqlite_where=sa.text("catalog IS NOT NULL"),
            postgresql_where=sa.text("catalog IS NOT NULL"),
        )
    if "tether_audit" not in have:
        op.create_table(
            "tether_audit",
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("episode", sa.String(36), nullable=True),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("sig", sa.Text, nullable=True),
            sa.Column("key", sa.String(32), nullable=True),
        )
        op.create_index("ix_tether_audit_episode", "tether_audit", ["episode"])
    if "tether_snapshots" not in have:
        op.create_table(
            "tether_snapshots",
            sa.Column("stream_id", sa.String(100), primary_key=True),
            sa.Column("kind", sa.String(50), primary_key=True),
            sa.Column("position", sa.BigInteger, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
        )
    if "tether_subject_keys" not in have:
        op.create_table(
            "tether_subject_keys",
            sa.Column("subject", sa.String(200), primary_key=True),
            sa.Column("key", sa.LargeBinary, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "tether_leases" not in have:
        op.create_table(
            "tether_leases",
            sa.Column("episode_id", sa.String(100), primary_key=True),
            sa.Column("token", sa.BigInteger, nullable=False),
            sa.Column("owner", sa.String(200), nullable=False),
            sa.Column("host", sa.String(200), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("expires", sa.Float, nullable=False),
            sa.Column("released", sa.Boolean, nullable=False),
        )


def downgrade() -> None:
    raise NotImplementedError("the baseline is where a store's history starts")
