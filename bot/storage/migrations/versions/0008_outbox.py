"""The inbox and the reply outbox: delivery columns on `reply`, and the `inbox` table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 12:40:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`. Replies stored before this revision count as sent
(`delivery` = "sent"), so the sweeper never re-sends them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the delivery columns to `reply` and create the inbox table."""
    with op.batch_alter_table("reply") as batch:
        batch.add_column(sa.Column("destination", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("delivery", sa.String(), nullable=False, server_default="sent"))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_reply_delivery", ["delivery", "claimed_until"])
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("dedupe_key", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("platform", "dedupe_key", name="uq_inbox_platform_dedupe_key"),
    )
    op.create_index("ix_inbox_pending", "inbox", ["status", "claimed_until"])


def downgrade() -> None:
    """Drop the inbox table and the delivery columns."""
    op.drop_index("ix_inbox_pending", table_name="inbox")
    op.drop_table("inbox")
    with op.batch_alter_table("reply") as batch:
        batch.drop_index("ix_reply_delivery")
        batch.drop_column("sent_at")
        batch.drop_column("claimed_until")
        batch.drop_column("attempts")
        batch.drop_column("delivery")
        batch.drop_column("destination")
