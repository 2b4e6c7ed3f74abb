"""The human-handoff relay: links between conversations and agents' cards, and its outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 00:00:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the relay_link and relay_outbox tables."""
    op.create_table(
        "relay_link",
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("desk", sa.String(), nullable=False),
        sa.Column("card_ref", sa.String(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_relay_link_conversation_id_conversation",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_relay_link"),
    )
    op.create_index("ix_relay_link_card_ref", "relay_link", ["card_ref"])
    op.create_table(
        "relay_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("target_platform", sa.String(), nullable=False),
        sa.Column("target_ref", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("origin_key", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_relay_outbox_conversation_id_conversation",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_relay_outbox"),
        sa.UniqueConstraint("origin_key", name="uq_relay_outbox_origin_key"),
    )
    op.create_index("ix_relay_outbox_pending", "relay_outbox", ["target_platform", "status"])


def downgrade() -> None:
    """Drop the two tables."""
    op.drop_index("ix_relay_outbox_pending", table_name="relay_outbox")
    op.drop_table("relay_outbox")
    op.drop_index("ix_relay_link_card_ref", table_name="relay_link")
    op.drop_table("relay_link")
