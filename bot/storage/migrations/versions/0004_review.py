"""The review queue: replies sampled for review or flagged by the QA pass, and their verdicts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 00:00:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the review_item table."""
    op.create_table(
        "review_item",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reply_id", sa.String(), nullable=False),
        sa.Column("sampled", sa.Boolean(), nullable=False),
        sa.Column("violations", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("expected_entry", sa.String(), nullable=True),
        sa.Column("reviewer", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["reply_id"],
            ["reply.id"],
            name="fk_review_item_reply_id_reply",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_review_item"),
        sa.UniqueConstraint("reply_id", name="uq_review_item_reply_id"),
    )
    op.create_index("ix_review_item_verdict", "review_item", ["verdict"])


def downgrade() -> None:
    """Drop the review_item table."""
    op.drop_index("ix_review_item_verdict", table_name="review_item")
    op.drop_table("review_item")
