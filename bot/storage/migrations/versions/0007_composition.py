"""The composition log: how each generated answer went (sent, or replaced and why).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 10:30:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the composition table."""
    op.create_table(
        "composition",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reply_id", sa.String(), nullable=False),
        sa.Column("composer", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("prompt_version", sa.String(), nullable=False),
        sa.Column("generated", sa.Text(), nullable=True),
        sa.Column("support", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reply_id"],
            ["reply.id"],
            name="fk_composition_reply_id_reply",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_composition"),
    )
    op.create_index("ix_composition_reply_id", "composition", ["reply_id"])
    op.create_index("ix_composition_outcome", "composition", ["outcome"])


def downgrade() -> None:
    """Drop the composition table."""
    op.drop_index("ix_composition_outcome", table_name="composition")
    op.drop_index("ix_composition_reply_id", table_name="composition")
    op.drop_table("composition")
