"""Proposed knowledge-base entries mined from agents' answers in resolved handoffs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 00:00:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the kb_proposal table."""
    op.create_table(
        "kb_proposal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("nearest_entry", sa.String(), nullable=True),
        sa.Column("nearest_score", sa.Float(), nullable=True),
        sa.Column("entry_id", sa.String(), nullable=True),
        sa.Column("reviewer", sa.String(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_kb_proposal_conversation_id_conversation",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kb_proposal"),
        sa.UniqueConstraint("fingerprint", name="uq_kb_proposal_fingerprint"),
    )
    op.create_index("ix_kb_proposal_status", "kb_proposal", ["status"])


def downgrade() -> None:
    """Drop the kb_proposal table."""
    op.drop_index("ix_kb_proposal_status", table_name="kb_proposal")
    op.drop_table("kb_proposal")
